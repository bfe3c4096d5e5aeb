"""A site's own data on disk: its schema, its train and validation files, its aggregates."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baton.domain import DataProfile
from baton.errors import DataError
from baton.ml.table import Split, read_table, write_parquet

__all__ = [
    "DATA_FORMATS",
    "LABEL_COLUMN",
    "MISSING_POLICIES",
    "SCHEMA_FILE",
    "TRAIN_FILE",
    "VAL_FILE",
    "Schema",
    "SiteData",
    "Split",
    "class_digest",
    "profile_of",
    "read_site_data",
    "read_table",
    "write_site_data",
]

LABEL_COLUMN = "label"
"""Name of the label column of a legacy schema."""
TRAIN_FILE = "train.csv"
VAL_FILE = "val.csv"
DATA_FORMATS = ("csv", "parquet")
"""The data file formats a site may hold (one per site)."""
SCHEMA_FILE = "schema.json"
MISSING_POLICIES = ("refuse", "impute")
"""The missing-value policies a schema may declare."""
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def class_digest(names: tuple[str, ...]) -> str:
    """Hex SHA-256 of the canonical JSON list of ``names``: a schema's stand-in for many
    class names, so its hash still follows every one of them."""
    text = json.dumps(list(names), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Schema:
    """The declared shape of a task's data; its hash is what sites publish and compare.

    A schema without categorical features, with label column ``label`` and missing policy
    ``refuse`` is the legacy form: :meth:`to_json` writes it as it always has, so its hash is
    unchanged.
    """

    task: str
    """Dataset task name."""
    feature_names: tuple[str, ...]
    """Feature column names, in feature order (a data file may hold them in any order)."""
    num_classes: int
    """Number of classes; labels are integers in ``[0, num_classes)``."""
    class_names: tuple[str, ...]
    """Human-readable name of each class index; a data file may give a label by name."""
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``(feature name, levels)`` for each categorical feature, in feature order; the other
    features are numeric."""
    label: str = LABEL_COLUMN
    """Name of the label column."""
    missing: str = "refuse"
    """Missing-value policy: ``refuse`` (a missing cell is an error) or ``impute`` (a missing
    cell reads as NaN, which the model replaces by the mean fitted at the first site)."""
    class_digest: str = ""
    """:func:`class_digest` of the class names, standing in for them where they are many
    (a language model's vocabulary): ``class_names`` is then empty and only numeric
    features with the legacy label and missing policy are allowed."""

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("schema 'task' must not be empty")
        if not self.feature_names or len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("schema 'feature_names' must be non-empty and unique")
        if not self.label:
            raise ValueError("schema 'label' must not be empty")
        if self.label in self.feature_names:
            raise ValueError(f"schema 'feature_names' must not contain {self.label!r}")
        named = 0 if self.class_digest else self.num_classes
        if self.num_classes < 2 or len(self.class_names) != named:
            raise ValueError("schema needs num_classes >= 2 and one class name per class")
        if self.class_digest and not (_DIGEST.match(self.class_digest) and self.is_legacy):
            raise ValueError("schema 'class_digest' must be 64 hex digits, on numeric features")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"schema 'missing' must be one of {', '.join(MISSING_POLICIES)}")
        order = [
            self.feature_names.index(n) for n, _ in self.categorical if n in self.feature_names
        ]
        if len(order) != len(self.categorical) or order != sorted(set(order)):
            raise ValueError("schema 'categorical' must name features once each, in feature order")
        for name, levels in self.categorical:
            if not levels or len(set(levels)) != len(levels):
                raise ValueError(f"schema feature {name!r} needs non-empty, unique levels")
        inputs = self.input_names
        if len(set(inputs)) != len(inputs):
            raise ValueError("schema features must encode to unique input names")

    @property
    def is_legacy(self) -> bool:
        """Whether the schema has the legacy form (every feature numeric, label column
        ``label``, missing policy ``refuse``)."""
        return not self.categorical and self.label == LABEL_COLUMN and self.missing == "refuse"

    def levels(self, name: str) -> tuple[str, ...] | None:
        """The levels of feature ``name`` if it is categorical, else ``None``."""
        return dict(self.categorical).get(name)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The encoded input columns, in feature order: a numeric feature's name, then
        ``"name=level"`` for each level of a categorical feature (one-hot)."""
        cats = dict(self.categorical)
        out: list[str] = []
        for name in self.feature_names:
            out.extend([f"{name}={lv}" for lv in cats[name]] if name in cats else [name])
        return tuple(out)

    @property
    def num_inputs(self) -> int:
        """Width of the encoded input matrix the model sees."""
        return len(self.input_names)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace); the input of :meth:`schema_hash`.

        The legacy form when :attr:`is_legacy`, the typed form otherwise.
        """
        obj: dict[str, Any]
        if self.is_legacy:
            obj = {
                **(
                    {"class_digest": self.class_digest}
                    if self.class_digest
                    else {"class_names": list(self.class_names)}
                ),
                "feature_names": list(self.feature_names),
                "num_classes": self.num_classes,
                "task": self.task,
            }
        else:
            obj = {
                "class_names": list(self.class_names),
                "features": [_feature_json(n, self.levels(n)) for n in self.feature_names],
                "label": self.label,
                "missing": self.missing,
                "task": self.task,
            }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Schema:
        """Parses a schema in the legacy or the typed form; ``source`` names it in errors.

        The typed form is an object with ``task``, ``class_names``, ``features`` (a list of
        ``{"name", "type": "numeric"}`` or ``{"name", "type": "categorical", "levels"}``)
        and optionally ``label`` (default ``"label"``) and ``missing`` (``refuse``, the
        default, or ``impute``). The legacy form has ``task``, ``feature_names``,
        ``num_classes`` and ``class_names`` (or ``class_digest``).

        Raises:
            DataError: The text is not JSON, or keys are missing, unknown or mistyped.
        """
        try:
            obj = json.loads(text)
        except ValueError:
            raise DataError(f"{source}: schema is not valid JSON") from None
        if not isinstance(obj, dict):
            raise DataError(f"{source}: schema must be a JSON object")
        try:
            if "features" in obj:
                return _typed_schema(obj, source)
            return _legacy_schema(obj, source)
        except ValueError as exc:
            raise DataError(f"{source}: {exc}") from None

    def schema_hash(self) -> str:
        """Lower-case hex SHA-256 of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def _feature_json(name: str, levels: tuple[str, ...] | None) -> dict[str, Any]:
    if levels is None:
        return {"name": name, "type": "numeric"}
    return {"levels": list(levels), "name": name, "type": "categorical"}


def _strings(source: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{source}: schema {key!r} must be a list of strings")
    return tuple(value)


def _string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(f"{source}: schema {key!r} must be a string")
    return value


def _legacy_schema(obj: dict[str, Any], source: str) -> Schema:
    names = "class_digest" if "class_digest" in obj else "class_names"
    expected = {"task", "feature_names", "num_classes", names}
    if set(obj) != expected:
        wrong = sorted(set(obj) ^ expected)[0]
        raise DataError(f"{source}: schema key {wrong!r} is missing or unknown")
    num_classes = obj["num_classes"]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise DataError(f"{source}: schema 'num_classes' must be an integer")
    return Schema(
        task=_string(source, "task", obj["task"]),
        feature_names=_strings(source, "feature_names", obj["feature_names"]),
        num_classes=num_classes,
        class_names=_strings(source, names, obj.get("class_names", [])),
        class_digest=_string(source, names, obj.get("class_digest", "")),
    )


def _typed_schema(obj: dict[str, Any], source: str) -> Schema:
    _check_keys(
        obj,
        required={"task", "class_names", "features"},
        optional={"label", "missing"},
        where=f"{source}: schema key",
    )
    class_names = _strings(source, "class_names", obj["class_names"])
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{source}: schema 'class_names' must be unique")
    features = obj["features"]
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise DataError(f"{source}: schema 'features' must be a list of objects")
    names = [f.get("name") for f in features]
    if not names:
        raise DataError(f"{source}: schema 'features' must not be empty")
    repeated = [n for n in names if isinstance(n, str) and names.count(n) > 1]
    if repeated:
        raise DataError(f"{source}: schema feature name {repeated[0]!r} is not unique")
    label = _string(source, "label", obj.get("label", LABEL_COLUMN))
    if label in names:
        raise DataError(f"{source}: schema 'features' must not contain the label {label!r}")
    categorical: list[tuple[str, tuple[str, ...]]] = []
    for i, feature in enumerate(features):
        where = f"{source}: schema feature {i}"
        _check_keys(feature, required={"name", "type"}, optional={"levels"}, where=f"{where} key")
        name = _string(source, f"features[{i}].name", feature["name"])
        kind = feature["type"]
        if kind == "numeric" and "levels" in feature:
            raise DataError(f"{where} ({name!r}): a numeric feature has no 'levels'")
        if kind == "categorical":
            if "levels" not in feature:
                raise DataError(f"{where} ({name!r}): a categorical feature needs 'levels'")
            categorical.append((name, _strings(source, f"features[{i}].levels", feature["levels"])))
        elif kind != "numeric":
            raise DataError(f"{where} ({name!r}): 'type' must be 'numeric' or 'categorical'")
    return Schema(
        task=_string(source, "task", obj["task"]),
        feature_names=tuple(names),
        num_classes=len(class_names),
        class_names=class_names,
        categorical=tuple(categorical),
        label=label,
        missing=_string(source, "missing", obj.get("missing", "refuse")),
    )


def _check_keys(obj: dict[str, Any], *, required: set[str], optional: set[str], where: str) -> None:
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise DataError(f"{where} {unknown[0]!r} is unknown")
    missing = sorted(required - set(obj))
    if missing:
        raise DataError(f"{where} {missing[0]!r} is missing")


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class SiteData:
    """One site's local data."""

    train: Split
    """Examples the site trains on."""
    val: Split
    """Examples the site evaluates incoming and outgoing models on."""


def write_site_data(site_dir: Path, data: SiteData, schema: Schema, *, fmt: str = "csv") -> None:
    """Writes ``schema.json`` and the train and validation files into ``site_dir``,
    creating it if needed.

    CSV (``train.csv``, ``val.csv``; header: feature names, then the label column) writes
    floats in their shortest round-trip form, so reading gives back the same float32 values
    (a NaN is written as ``nan``, which reads as missing). Parquet (``train.parquet``,
    ``val.parquet``) writes float32 feature columns and an int64 label column. It writes
    encoded inputs only, so only schemas without categorical features can be written; a
    site with categorical features exports its own table.

    Args:
        site_dir: The site's data directory.
        data: The site's splits.
        schema: Their schema.
        fmt: ``csv`` or ``parquet``.

    Raises:
        ValueError: ``fmt`` is unknown, or the schema has categorical features.
    """
    if fmt not in DATA_FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; known: {', '.join(DATA_FORMATS)}")
    if schema.categorical:
        raise ValueError(
            "write_site_data writes encoded inputs only, which a schema with categorical "
            "features cannot read back; write such a table by hand"
        )
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / SCHEMA_FILE).write_text(schema.to_json() + "\n", encoding="utf-8")
    header = [*schema.feature_names, schema.label]
    for stem, split in (("train", data.train), ("val", data.val)):
        path = site_dir / f"{stem}.{fmt}"
        if fmt == "parquet":
            write_parquet(path, header, split.x, split.y)
            continue
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            for row, label in zip(split.x.tolist(), split.y.tolist(), strict=True):
                writer.writerow([*(repr(v) for v in row), str(label)])


def read_site_data(site_dir: Path) -> tuple[Schema, SiteData]:
    """Reads and validates one site's data from ``site_dir`` and nothing else.

    The site holds ``schema.json`` and either ``train.csv`` and ``val.csv`` or
    ``train.parquet`` and ``val.parquet``. Each file is read with :func:`read_table`.

    Raises:
        DataError: A file is missing, unreadable or fails validation, or the site holds
            both formats or neither.
    """
    schema_path = site_dir / SCHEMA_FILE
    schema = Schema.from_json(_read_text(schema_path), source=str(schema_path))
    fmt = _data_format(site_dir)
    train = read_table(site_dir / f"train.{fmt}", schema)
    val = read_table(site_dir / f"val.{fmt}", schema)
    return schema, SiteData(train=train, val=val)


def _data_format(site_dir: Path) -> str:
    found = [
        f
        for f in DATA_FORMATS
        if (site_dir / f"train.{f}").exists() or (site_dir / f"val.{f}").exists()
    ]
    if len(found) > 1:
        raise DataError(
            f"{site_dir}: holds both train.csv/val.csv and train.parquet/val.parquet; "
            "keep one format"
        )
    if not found:
        raise DataError(f"{site_dir / TRAIN_FILE}: file not found (nor train.parquet)")
    return found[0]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def profile_of(schema: Schema, data: SiteData) -> DataProfile:
    """The aggregates a site publishes: training size, label histogram, schema hash, task."""
    hist = np.bincount(data.train.y, minlength=schema.num_classes)
    return DataProfile(
        num_examples=len(data.train),
        label_histogram=tuple(int(v) for v in hist),
        schema_hash=schema.schema_hash(),
        task=schema.task,
    )
