"""Strict TOML-to-dataclass loading: unknown keys and wrong types name the key and the file."""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from baton.errors import ConfigError

T = TypeVar("T")


def read_text(path: Path, *, what: str = "file") -> str:
    """Reads a UTF-8 text file, turning every failure into a ConfigError that names the file
    (``what`` names its kind in the message, e.g. ``plan``)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
            "save the file as UTF-8"
        ) from None


def read_toml(path: Path) -> dict[str, Any]:
    """Parses a TOML file, turning every failure into a ConfigError that names the file."""
    return parse_toml(read_text(path), source=str(path))


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    """Parses TOML text; ``source`` names it in error messages."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: malformed TOML: {exc}") from None


def load(cls: type[T], path: Path, *, section: str = "") -> T:
    """Builds ``cls`` from the TOML file at ``path``, its paths taken from the file's directory.

    Raises:
        ConfigError: The file cannot be read or parsed, or does not fit ``cls``.
    """
    return build(cls, read_toml(path), source=str(path), section=section, base=path.parent)


def build(
    cls: type[T],
    table: Mapping[str, Any],
    *,
    source: str,
    section: str,
    base: Path | None = None,
) -> T:
    """Builds the frozen dataclass ``cls`` from one TOML table.

    Constraints: every key of ``table`` MUST be a field of ``cls``; values MUST have the
    field's type (ints are accepted for floats, lists for tuples; a ``Literal`` or
    ``StrEnum`` field takes one of its values, named in the error otherwise). Fields without
    a default MUST be present. Nested dataclass fields take a nested table. With ``base``,
    every relative ``Path`` field, given or defaulted, is taken from ``base``.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        where = f"[{section}]" if section else "top level"
        raise ConfigError(
            f"{source}: unknown key {where_key(section, unknown[0])!r} in {where}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = where_key(section, name)
        if name not in table:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(f"{source}: missing required key {key!r}")
            if base is not None and isinstance(field.default, Path):
                kwargs[name] = base / field.default
            continue
        kwargs[name] = _coerce(hints[name], table[name], source=source, key=key, base=base)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{section}] {exc}") from None


def where_key(section: str, name: str) -> str:
    """Dotted key path for messages, e.g. ``training.lr``."""
    return f"{section}.{name}" if section else name


def _coerce(hint: Any, value: Any, *, source: str, key: str, base: Path | None) -> Any:
    """``value`` as the type ``hint`` names; ConfigError naming ``key`` if it is not one."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, source=source, section=key, base=base)
    if origin is typing.Literal:
        return _choose(value, args, args, source=source, key=key)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        members = tuple(hint)
        return _choose(value, tuple(m.value for m in members), members, source=source, key=key)
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source=source, key=key, base=base)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key!r} must be a list, not {_tname(value)}")
        item = args[0]
        return tuple(
            _coerce(item, v, source=source, key=f"{key}[{i}]", base=base)
            for i, v in enumerate(value)
        )
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key!r} must be a table, not {_tname(value)}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key!r} must be a number, not {_tname(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key!r} must be an integer, not {_tname(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key!r} must be true or false, not {_tname(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key!r} must be a string, not {_tname(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key!r} must be a path string, not {_tname(value)}")
        return Path(value) if base is None else base / value
    if hint is Any:
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {key}")


def _choose(
    value: Any, allowed: tuple[Any, ...], results: tuple[Any, ...], *, source: str, key: str
) -> Any:
    """The result paired with ``value`` in ``allowed``; ConfigError listing them if none is."""
    for candidate, result in zip(allowed, results, strict=True):
        if type(value) is type(candidate) and value == candidate:
            return result
    raise ConfigError(
        f"{source}: {key!r} must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}"
    )


def _tname(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
