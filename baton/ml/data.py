"""A site's own data on disk: its schema, train and validation CSV files, and the
aggregates it publishes (never rows)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baton.domain import DataProfile
from baton.errors import DataError

LABEL_COLUMN = "label"
"""Name of the label column in a site's CSV files."""
TRAIN_FILE = "train.csv"
VAL_FILE = "val.csv"
SCHEMA_FILE = "schema.json"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, kw_only=True, slots=True)
class Schema:
    """The declared shape of a task's data; its hash is what sites publish and compare."""

    task: str
    """Dataset task name (one of :func:`known_datasets`)."""
    feature_names: tuple[str, ...]
    """Feature column names, in column order."""
    num_classes: int
    """Number of classes; labels are integers in ``[0, num_classes)``."""
    class_names: tuple[str, ...]
    """Human-readable name of each class index."""

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("schema 'task' must not be empty")
        if not self.feature_names or len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("schema 'feature_names' must be non-empty and unique")
        if LABEL_COLUMN in self.feature_names:
            raise ValueError(f"schema 'feature_names' must not contain {LABEL_COLUMN!r}")
        if self.num_classes < 2 or len(self.class_names) != self.num_classes:
            raise ValueError("schema needs num_classes >= 2 and one class name per class")

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace); the input of :meth:`schema_hash`."""
        obj = {
            "class_names": list(self.class_names),
            "feature_names": list(self.feature_names),
            "num_classes": self.num_classes,
            "task": self.task,
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Schema:
        """Parses a schema; ``source`` names it in errors.

        Raises:
            DataError: The text is not JSON, or keys are missing, unknown or mistyped.
        """
        try:
            obj = json.loads(text)
        except ValueError:
            raise DataError(f"{source}: schema is not valid JSON") from None
        if not isinstance(obj, dict):
            raise DataError(f"{source}: schema must be a JSON object")
        expected = {"task", "feature_names", "num_classes", "class_names"}
        if set(obj) != expected:
            wrong = sorted(set(obj) ^ expected)[0]
            raise DataError(f"{source}: schema key {wrong!r} is missing or unknown")
        task, features = obj["task"], obj["feature_names"]
        num_classes, class_names = obj["num_classes"], obj["class_names"]
        if not isinstance(task, str):
            raise DataError(f"{source}: schema 'task' must be a string")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool):
            raise DataError(f"{source}: schema 'num_classes' must be an integer")
        for key, names in (("feature_names", features), ("class_names", class_names)):
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(f"{source}: schema {key!r} must be a list of strings")
        try:
            return cls(
                task=task,
                feature_names=tuple(features),
                num_classes=num_classes,
                class_names=tuple(class_names),
            )
        except ValueError as exc:
            raise DataError(f"{source}: {exc}") from None

    def schema_hash(self) -> str:
        """Lower-case hex SHA-256 of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Split:
    """Examples and labels: ``x`` float32 ``[n, f]``, ``y`` int64 ``[n]``."""

    x: np.ndarray[Any, np.dtype[np.float32]]
    """Features, one row per example."""
    y: np.ndarray[Any, np.dtype[np.int64]]
    """Class indices."""

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32 or self.x.ndim != 2:
            raise ValueError("Split.x must be a 2-D float32 array")
        if self.y.dtype != np.int64 or self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError("Split.y must be a 1-D int64 array as long as Split.x")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class SiteData:
    """One site's local data."""

    train: Split
    """Examples the site trains on."""
    val: Split
    """Examples the site evaluates incoming and outgoing models on."""


def write_site_data(site_dir: Path, data: SiteData, schema: Schema) -> None:
    """Writes ``train.csv``, ``val.csv`` (header: feature names, then ``label``) and
    ``schema.json`` into ``site_dir``, creating it if needed.

    Floats are written in their shortest round-trip form, so reading gives back the same
    float32 values.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / SCHEMA_FILE).write_text(schema.to_json() + "\n", encoding="utf-8")
    for name, split in ((TRAIN_FILE, data.train), (VAL_FILE, data.val)):
        with (site_dir / name).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([*schema.feature_names, LABEL_COLUMN])
            for row, label in zip(split.x.tolist(), split.y.tolist(), strict=True):
                writer.writerow([*(repr(v) for v in row), str(label)])


def read_site_data(site_dir: Path) -> tuple[Schema, SiteData]:
    """Reads and validates one site's data from ``site_dir`` and nothing else.

    Checks that every file is present, that each CSV header is exactly the schema's
    feature names followed by ``label``, that every feature is a finite number (also as
    float32), that every label is an integer in ``[0, num_classes)``, and that neither
    split is empty. Error messages name the file, line and column, never a value.

    Raises:
        DataError: A file is missing, unreadable or fails validation.
    """
    schema_path = site_dir / SCHEMA_FILE
    schema = Schema.from_json(_read_text(schema_path), source=str(schema_path))
    train = _read_split(site_dir / TRAIN_FILE, schema)
    val = _read_split(site_dir / VAL_FILE, schema)
    return schema, SiteData(train=train, val=val)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def _read_split(path: Path, schema: Schema) -> Split:
    rows = list(_csv_rows(path))
    header = [*schema.feature_names, LABEL_COLUMN]
    if not rows or rows[0] != header:
        raise DataError(f"{path}: header does not match the schema's feature names + 'label'")
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no examples")
    nf = len(schema.feature_names)
    x = np.empty((len(body), nf), dtype=np.float32)
    y = np.empty(len(body), dtype=np.int64)
    for r, row in enumerate(body):
        line = r + 2
        if len(row) != nf + 1:
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {nf + 1}")
        for c in range(nf):
            try:
                value = float(row[c])
            except ValueError:
                raise DataError(
                    f"{path}: line {line}, column {header[c]!r}: not a number"
                ) from None
            if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX):
                raise DataError(f"{path}: line {line}, column {header[c]!r}: not finite")
            x[r, c] = value
        try:
            label = int(row[nf])
        except ValueError:
            raise DataError(f"{path}: line {line}, column 'label': not an integer") from None
        if not 0 <= label < schema.num_classes:
            raise DataError(
                f"{path}: line {line}, column 'label': outside [0, {schema.num_classes})"
            )
        y[r] = label
    return Split(x=x, y=y)


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
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
