"""The strict TOML loader: choices from Literal and StrEnum fields, paths from the file."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from baton.config import build, load, read_toml
from baton.errors import ConfigError


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, kw_only=True, slots=True)
class Inner:
    ca: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    mode: Literal["fast", "safe"] = "safe"
    level: Literal[1, 2] = 1
    colour: Colour = Colour.RED
    data: Path = Path("data")
    logs: Path | None = None
    inner: Inner = field(default_factory=lambda: Inner(ca=Path("/ca.pem")))


def test_literal_and_strenum_take_their_values() -> None:
    cfg = build(Config, {"mode": "fast", "level": 2, "colour": "blue"}, source="c.toml", section="")
    assert (cfg.mode, cfg.level, cfg.colour) == ("fast", 2, Colour.BLUE)
    assert type(cfg.colour) is Colour


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "slow"}, "c.toml: 'mode' must be one of 'fast', 'safe', not 'slow'"),
        ({"level": True}, "c.toml: 'level' must be one of 1, 2, not True"),
        ({"colour": "green"}, "c.toml: 'colour' must be one of 'red', 'blue', not 'green'"),
    ],
)
def test_a_value_outside_the_choices_lists_them(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(Config, table, source="c.toml", section="")
    assert str(caught.value) == message


def test_paths_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "c.toml"
    path.parent.mkdir()
    path.write_text('logs = "logs"\n[inner]\nca = "pki/ca.pem"\n', encoding="utf-8")
    cfg = load(Config, path)
    assert cfg.data == tmp_path / "etc" / "data"  # a default, resolved too
    assert cfg.logs == tmp_path / "etc" / "logs"
    assert cfg.inner.ca == tmp_path / "etc" / "pki" / "ca.pem"


def test_absolute_paths_stay_as_written(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('data = "/srv/data"\n', encoding="utf-8")
    assert load(Config, path).data == Path("/srv/data")


def test_without_a_base_paths_are_kept_relative() -> None:
    assert build(Config, {"data": "d"}, source="c.toml", section="").data == Path("d")


def test_a_file_that_is_not_utf8_is_a_config_error_naming_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'[site]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"site\.toml: not UTF-8 text \(byte 0xe9 on line 2\)"):
        read_toml(path)
