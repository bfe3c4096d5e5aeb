"""The data gate: named checks a site's data passes before it trains, reported as counts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from baton.errors import DataError
from baton.ml.data import Schema, SiteData, Split

__all__ = ["Check", "GatePolicy", "GateReport", "Status", "check_site_data", "require_passing"]

logger = logging.getLogger(__name__)


class Status(StrEnum):
    """Outcome of one check; only ``FAIL`` stops a hop."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, kw_only=True, slots=True)
class GatePolicy:
    """Which findings fail the gate and which only warn (a site's ``[data]`` table).

    The defaults pass the simulations' data: label-skewed (Dirichlet) splits where a site
    lacks classes by design, and the ``tokens`` task, whose short discrete windows repeat
    naturally (up to about a third of a split, and more of a small site's validation rows
    recur in its training rows). A site with continuous measurements can be stricter, e.g.::

        [data]
        max_duplicate_fraction = 0.01
        max_leaked_fraction = 0.0
        min_examples_per_class = 5
    """

    max_duplicate_fraction: float = 0.5
    """Largest share of training rows that repeat an earlier training row (features and
    label) before ``duplicates`` fails; any repeat warns."""
    max_leaked_fraction: float = 0.75
    """Largest share of validation rows that also appear in the training split before
    ``leakage`` fails; any such row warns."""
    min_examples_per_class: int = 1
    """``label_balance`` warns when a class present in training has fewer examples."""
    fail_on_missing_class: bool = False
    """Whether a class absent from the training split fails ``label_balance`` (else it warns)."""
    min_train_examples: int = 1
    """``size`` fails with fewer training examples (an empty split always fails)."""
    min_val_examples: int = 1
    """``size`` fails with fewer validation examples."""

    def __post_init__(self) -> None:
        for name in ("max_duplicate_fraction", "max_leaked_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name!r} must lie in [0, 1], not {getattr(self, name)}")
        if self.min_examples_per_class < 0:
            raise ValueError(
                f"'min_examples_per_class' must not be negative, not {self.min_examples_per_class}"
            )
        for name in ("min_train_examples", "min_val_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name!r} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One named check: its status, its counts, and a sentence built from counts only."""

    name: str
    """The check's name, e.g. ``duplicates``."""
    status: Status
    """ok, warn or FAIL."""
    counts: Mapping[str, int]
    """What the check counted, by name."""
    summary: str
    """Counts in words; never a value, a row or a class name from the data."""

    def line(self) -> str:
        """``"<status> <name>: <summary>"``, the form the report and the CLI print."""
        return f"{self.status.value:<4} {self.name}: {self.summary}"


@dataclass(frozen=True, kw_only=True, slots=True)
class GateReport:
    """The outcome of every check, in a fixed order."""

    checks: tuple[Check, ...]
    """Every check the gate ran."""

    @property
    def passed(self) -> bool:
        """Whether no check failed (warnings pass)."""
        return not self.failures

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if c.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        """The checks that warn."""
        return tuple(c for c in self.checks if c.status is Status.WARN)

    def check(self, name: str) -> Check:
        """The check called ``name``.

        Raises:
            KeyError: No check has that name.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def lines(self) -> list[str]:
        """One line per check."""
        return [c.line() for c in self.checks]

    def verdict(self) -> str:
        """One line: pass or FAIL, with the number of failing and warning checks."""
        if self.passed:
            return f"verdict: pass ({len(self.warnings)} of {len(self.checks)} checks warn)"
        return f"verdict: FAIL ({len(self.failures)} of {len(self.checks)} checks failed)"


def check_site_data(schema: Schema, data: SiteData, policy: GatePolicy) -> GateReport:
    """Runs every check on a site's data.

    Constraints: the report MUST hold only counts (and the schema's own sizes), never a
    feature value, a row or a label taken from the data.
    """
    nf = schema.num_inputs
    both = (data.train, data.val)
    # Rows of a split without the schema's columns are compared with nothing (see ``schema``).
    train_keys, val_keys = (_row_keys(s) if s.x.shape[1] == nf else [] for s in both)
    return GateReport(
        checks=(
            _schema(schema, both),
            _missing(schema, both),
            _size(data, policy),
            _duplicates(train_keys, policy),
            _leakage(train_keys, val_keys, policy),
            _label_balance(schema, data.train, policy),
            _ranges(data.train),
        )
    )


def require_passing(schema: Schema, data: SiteData, policy: GatePolicy) -> GateReport:
    """Runs the gate, logs its warnings and returns the report if no check failed.

    Raises:
        DataError: A check failed; the message holds the failing checks' lines.
    """
    report = check_site_data(schema, data, policy)
    for c in report.warnings:
        logger.warning("data gate: %s", c.line())
    if not report.passed:
        raise DataError("data gate failed: " + "; ".join(c.line() for c in report.failures))
    return report


def _check(name: str, status: Status, summary: str, **counts: int) -> Check:
    return Check(name=name, status=status, counts=counts, summary=summary)


def _schema(schema: Schema, splits: tuple[Split, ...]) -> Check:
    nf, k = schema.num_inputs, schema.num_classes
    bad_width = sum(1 for s in splits if s.x.shape[1] != nf)
    bad_labels = sum(int(((s.y < 0) | (s.y >= k)).sum()) for s in splits)
    status = Status.FAIL if bad_width or bad_labels else Status.OK
    summary = (
        f"{len(splits) - bad_width} of {len(splits)} splits have the schema's {nf} feature "
        f"columns, {bad_labels} labels outside [0, {k})"
    )
    return _check("schema", status, summary, bad_splits=bad_width, bad_labels=bad_labels)


def _missing(schema: Schema, splits: tuple[Split, ...]) -> Check:
    """NaN inputs are missing cells: a FAIL under the ``refuse`` policy, a warning under
    ``impute`` (the model replaces them by its fitted mean); an infinity always fails."""
    missing = sum(int(np.isnan(s.x).sum()) for s in splits)
    infinite = sum(int(np.isinf(s.x).sum()) for s in splits)
    if schema.missing == "impute":
        status = Status.FAIL if infinite else Status.WARN if missing else Status.OK
        summary = f"{missing} missing inputs to impute, {infinite} non-finite inputs"
    else:
        status = Status.FAIL if missing or infinite else Status.OK
        summary = f"{missing + infinite} missing or non-finite features"
    return _check("missing", status, summary, missing=missing, non_finite=infinite)


def _size(data: SiteData, policy: GatePolicy) -> Check:
    n_train, n_val = len(data.train), len(data.val)
    short = n_train < policy.min_train_examples or n_val < policy.min_val_examples
    summary = (
        f"{n_train} training examples (at least {policy.min_train_examples}), "
        f"{n_val} validation examples (at least {policy.min_val_examples})"
    )
    return _check("size", Status.FAIL if short else Status.OK, summary, train=n_train, val=n_val)


def _duplicates(train_keys: list[bytes], policy: GatePolicy) -> Check:
    n = len(train_keys)
    repeats = n - len(set(train_keys))
    status = _graded(repeats, n, policy.max_duplicate_fraction)
    summary = f"{repeats} of {n} training rows repeat an earlier row" + _limit(
        status, policy.max_duplicate_fraction
    )
    return _check("duplicates", status, summary, duplicates=repeats, rows=n)


def _leakage(train_keys: list[bytes], val_keys: list[bytes], policy: GatePolicy) -> Check:
    seen = set(train_keys)
    leaked = sum(1 for k in val_keys if k in seen)
    n = len(val_keys)
    status = _graded(leaked, n, policy.max_leaked_fraction)
    summary = f"{leaked} of {n} validation rows also in the training split" + _limit(
        status, policy.max_leaked_fraction
    )
    return _check("leakage", status, summary, leaked=leaked, rows=n)


def _label_balance(schema: Schema, train: Split, policy: GatePolicy) -> Check:
    k = schema.num_classes
    in_range = train.y[(train.y >= 0) & (train.y < k)]
    hist = np.bincount(in_range, minlength=k)
    absent = int((hist == 0).sum())
    smallest = int(hist[hist > 0].min()) if absent < k else 0
    if absent and policy.fail_on_missing_class:
        status = Status.FAIL
    elif absent or smallest < policy.min_examples_per_class:
        status = Status.WARN
    else:
        status = Status.OK
    summary = (
        f"{absent} of {k} classes absent from training, "
        f"smallest present class has {smallest} examples"
    )
    return _check("label_balance", status, summary, absent_classes=absent, smallest=smallest)


def _ranges(train: Split) -> Check:
    nf = train.x.shape[1]
    # A non-finite feature is never constant (NaN != NaN); ``missing`` counts it.
    constant = int((train.x.max(0) == train.x.min(0)).sum()) if len(train) else 0
    if constant and constant == nf and len(train) > 1:
        status = Status.FAIL  # nothing to learn from but the label prior
    else:
        status = Status.WARN if constant else Status.OK
    summary = f"{constant} of {nf} features constant across the training split"
    return _check("ranges", status, summary, constant_features=constant, features=nf)


def _graded(count: int, total: int, max_fraction: float) -> Status:
    """FAIL above ``max_fraction`` of ``total``, WARN for any count, OK for none."""
    if count and count > max_fraction * total:
        return Status.FAIL
    return Status.WARN if count else Status.OK


def _limit(status: Status, max_fraction: float) -> str:
    return f" (more than the {max_fraction:.0%} allowed)" if status is Status.FAIL else ""


def _row_keys(split: Split) -> list[bytes]:
    """Each row's features and label as bytes; equal rows give equal keys."""
    n = len(split)
    x = np.ascontiguousarray(split.x + np.float32(0.0))  # -0.0 becomes 0.0
    y = np.ascontiguousarray(split.y.astype("<i8"))
    width = 4 * x.shape[1]
    raw = np.concatenate([x.view(np.uint8).reshape(n, width), y.view(np.uint8).reshape(n, 8)], 1)
    keys: Any = np.ascontiguousarray(raw).view(np.dtype((np.void, raw.shape[1]))).ravel()
    return list(keys.tolist())
