"""Dataset tasks on scikit-learn's bundled datasets (and one generated token language), split
non-IID across simulated sites."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets as _sk

from baton.domain import DataProfile
from baton.errors import DataError

logger = logging.getLogger(__name__)

LABEL_COLUMN = "label"
"""Name of the label column in a site's CSV files."""
TRAIN_FILE = "train.csv"
VAL_FILE = "val.csv"
SCHEMA_FILE = "schema.json"

TOKENS_CONTEXT = 12
"""Tokens per window of the ``tokens`` task (its features)."""
TOKENS_VOCAB = 16
"""Vocabulary of the ``tokens`` task (its classes)."""


def _load_tokens() -> Any:
    """The ``tokens`` task: 1,800 windows of a synthetic token language, generated here.

    Each sequence follows ``x[t+1] = (3 * x[t] + step) mod 16`` with a per-sequence
    ``step``, one token in ten replaced by noise (:func:`baton.models_lm.synthetic_tokens`);
    features are the first 12 tokens as numbers, the label is the 13th. A causal language
    model (``causal_lm``) learns it; the next token follows from the last two.
    """
    from types import SimpleNamespace

    from baton.models_lm import synthetic_tokens

    tokens = synthetic_tokens(n=1800, seq_len=TOKENS_CONTEXT, vocab=TOKENS_VOCAB, seed=0)
    return SimpleNamespace(
        data=tokens[:, :-1].numpy(),
        target=tokens[:, -1].numpy(),
        feature_names=[f"t{i}" for i in range(TOKENS_CONTEXT)],
        target_names=[f"token-{v}" for v in range(TOKENS_VOCAB)],
    )


_LOADERS: dict[str, Callable[[], Any]] = {
    "breast_cancer": _sk.load_breast_cancer,
    "digits": _sk.load_digits,
    "wine": _sk.load_wine,
    "tokens": _load_tokens,
}
_PARTITION_KINDS = ("dirichlet", "quantity", "iid")
_MAX_PARTITION_ATTEMPTS = 1000
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def known_datasets() -> tuple[str, ...]:
    """Names of the dataset tasks sites can hold."""
    return tuple(_LOADERS)


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Partition:
    """How a dataset's non-test examples are spread across sites.

    With ``K`` sites, ``alpha`` the concentration and a seeded NumPy generator:

    * ``dirichlet`` (label skew): for each class ``c`` separately, draw site proportions
      ``p_c ~ Dirichlet(alpha * 1_K)``, shuffle that class's examples and cut them into
      ``K`` consecutive chunks of sizes ``floor(cumsum(p_c) * n_c)`` differences; chunk
      ``k`` goes to the ``k``-th site. Small ``alpha`` gives sites few classes.
    * ``quantity`` (quantity skew): draw site proportions ``q ~ Dirichlet(alpha * 1_K)``
      once, shuffle all examples and cut them the same way: labels are IID, sizes differ.
    * ``iid``: shuffle all examples and cut them into ``K`` near-equal parts.

    Guarantee: every site gets at least ``min_train_examples`` training examples (after
    its validation examples are set aside) and at least one validation example. A draw
    that violates this is discarded and drawn again from the same generator (at most 1000
    times, then :class:`DataError`), so the result is a deterministic function of the seed
    and follows the Dirichlet law conditioned on the guarantee.
    """

    kind: str
    """``dirichlet``, ``quantity`` or ``iid``."""
    alpha: float = 0.5
    """Dirichlet concentration (ignored by ``iid``); smaller is more skewed."""
    min_train_examples: int = 10
    """Minimum training examples every site receives."""

    def __post_init__(self) -> None:
        if self.kind not in _PARTITION_KINDS:
            raise ValueError(
                f"partition kind {self.kind!r} is unknown; known: {', '.join(_PARTITION_KINDS)}"
            )
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"partition alpha must be positive and finite, not {self.alpha}")
        if self.min_train_examples < 1:
            raise ValueError("partition min_train_examples must be at least 1")


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


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Federation:
    """A simulated federation: each site's data plus a global held-out test set."""

    schema: Schema
    """The task's schema, shared by every site."""
    sites: dict[str, SiteData]
    """Site id to its data, in the order the sites were given."""
    test: Split
    """Stratified held-out test set no site holds."""

    def pooled_train(self) -> Split:
        """All sites' training splits concatenated, in site order (for centralized baselines)."""
        parts = list(self.sites.values())
        return Split(
            x=np.concatenate([p.train.x for p in parts]),
            y=np.concatenate([p.train.y for p in parts]),
        )


def load_task(dataset: str) -> tuple[Schema, Split]:
    """Loads a bundled dataset (no network) with its schema.

    Raises:
        DataError: ``dataset`` is not a known task.
    """
    if dataset not in _LOADERS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(known_datasets())}")
    bunch = _LOADERS[dataset]()
    schema = Schema(
        task=dataset,
        feature_names=tuple(str(n) for n in bunch.feature_names),
        num_classes=len(bunch.target_names),
        class_names=tuple(str(n) for n in bunch.target_names),
    )
    x = np.ascontiguousarray(bunch.data, dtype=np.float32)
    return schema, Split(x=x, y=np.asarray(bunch.target, dtype=np.int64))


def make_federation(
    dataset: str,
    site_ids: Sequence[str],
    partition: Partition,
    *,
    seed: int,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
) -> Federation:
    """Splits a bundled dataset into a global test set and per-site train/val data.

    First a test set stratified by class (``round(n_c * test_fraction)`` examples of each
    class ``c``) is held out; the rest is spread over ``site_ids`` by ``partition``; each
    site's part is then shuffled and its first ``max(1, round(m * val_fraction))`` examples
    become its validation split. Deterministic given ``seed`` (non-negative).

    Raises:
        DataError: Unknown dataset, bad arguments, or the guarantee of ``partition``
            cannot be met.
    """
    if not site_ids or len(set(site_ids)) != len(site_ids):
        raise DataError("site ids must be non-empty and unique")
    if seed < 0:
        raise DataError(f"seed must be non-negative, not {seed}")
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1):
        raise DataError("test_fraction and val_fraction must lie strictly between 0 and 1")
    schema, full = load_task(dataset)
    test_rng, part_rng, val_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    test_idx, rest_idx = _stratified_holdout(full.y, test_fraction, test_rng)
    parts = _draw_partition(full.y, rest_idx, len(site_ids), partition, val_fraction, part_rng)
    sites: dict[str, SiteData] = {}
    for site_id, idx in zip(site_ids, parts, strict=True):
        idx = val_rng.permutation(idx)
        n_val = _val_size(len(idx), val_fraction)
        sites[site_id] = SiteData(train=_take(full, idx[n_val:]), val=_take(full, idx[:n_val]))
    logger.debug("made federation of %d sites for %s", len(sites), dataset)
    return Federation(schema=schema, sites=sites, test=_take(full, test_idx))


def _take(full: Split, idx: np.ndarray[Any, Any]) -> Split:
    idx = np.sort(idx)
    return Split(x=np.ascontiguousarray(full.x[idx]), y=np.ascontiguousarray(full.y[idx]))


def _val_size(m: int, val_fraction: float) -> int:
    return max(1, round(m * val_fraction))


def _stratified_holdout(
    y: np.ndarray[Any, Any], fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    test, rest = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * fraction)
        test.append(idx[:n_test])
        rest.append(idx[n_test:])
    return np.concatenate(test), np.concatenate(rest)


def _cut(idx: np.ndarray[Any, Any], proportions: np.ndarray[Any, Any]) -> list[Any]:
    bounds = (np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
    return list(np.split(idx, bounds))


def _draw_partition(
    y: np.ndarray[Any, Any],
    idx: np.ndarray[Any, Any],
    k: int,
    partition: Partition,
    val_fraction: float,
    rng: np.random.Generator,
) -> list[np.ndarray[Any, Any]]:
    for _ in range(_MAX_PARTITION_ATTEMPTS):
        if partition.kind == "dirichlet":
            buckets: list[list[np.ndarray[Any, Any]]] = [[] for _ in range(k)]
            for c in np.unique(y[idx]):
                members = rng.permutation(idx[y[idx] == c])
                chunks = _cut(members, rng.dirichlet(np.full(k, partition.alpha)))
                for bucket, chunk in zip(buckets, chunks, strict=True):
                    bucket.append(chunk)
            parts = [np.concatenate(b) for b in buckets]
        elif partition.kind == "quantity":
            parts = _cut(rng.permutation(idx), rng.dirichlet(np.full(k, partition.alpha)))
        else:
            parts = list(np.array_split(rng.permutation(idx), k))
        if all(
            len(p) - _val_size(len(p), val_fraction) >= partition.min_train_examples for p in parts
        ):
            return parts
    raise DataError(
        f"cannot give each of {k} sites {partition.min_train_examples} training examples "
        f"from {len(idx)} examples with a {partition.kind} partition (alpha "
        f"{partition.alpha}); use fewer sites, a larger alpha or a smaller minimum"
    )


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
