"""The toy tasks the simulations run on: scikit-learn's bundled datasets and one generated
token language, split non-IID across simulated sites."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import datasets as _sk

from baton.errors import DataError
from baton.ml.data import Schema, SiteData, Split
from baton.ml.task import ReaderTask, Task
from baton.ml.task import load_task as installed_task

if TYPE_CHECKING:
    from torch import nn

    from baton.ml.hooks import TaskHooks
    from baton.plan import RunPlan

logger = logging.getLogger(__name__)

TOKENS_CONTEXT = 12
"""Tokens per window of the ``tokens`` task (its features)."""
TOKENS_VOCAB = 16
"""Vocabulary of the ``tokens`` task (its classes)."""


def load_tokens() -> Any:
    """The ``tokens`` task: 1,800 windows of a synthetic token language, generated here.

    Each sequence follows ``x[t+1] = (3 * x[t] + step) mod 16`` with a per-sequence
    ``step``, one token in ten replaced by noise (:func:`baton.ml.models_lm.synthetic_tokens`);
    features are the first 12 tokens as numbers, the label is the 13th. A causal language
    model (``causal_lm``) learns it; the next token follows from the last two.
    """
    from types import SimpleNamespace

    from baton.ml.models_lm import synthetic_tokens

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
    "tokens": load_tokens,
}
"""The toy datasets. Each scikit-learn set is also a task of its own name for the
simulations' sites (``pyproject.toml`` registers them as ``baton.tasks`` entry points; a
test keeps the lists equal); the demo serves the same tables to the built-in ``tabular``
task instead. ``tokens`` is the built-in ``tokens`` task's data."""

BREAST_CANCER = ReaderTask(name="breast_cancer")
DIGITS = ReaderTask(name="digits")
WINE = ReaderTask(name="wine")
_PARTITION_KINDS = ("dirichlet", "quantity", "iid")
_MAX_PARTITION_ATTEMPTS = 1000


def known_datasets() -> tuple[str, ...]:
    """Names of the dataset tasks sites can hold."""
    return tuple(_LOADERS)


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
class Federation:
    """A simulated federation: each site's data plus a global held-out test set."""

    schema: Schema
    """The task's schema, shared by every site."""
    sites: dict[str, SiteData]
    """Site id to its data, in the order the sites were given."""
    test: Split
    """Stratified held-out test set no site holds."""
    task: Task | None = None
    """The task whose hooks build, train and score the model; None: the installed task
    the schema names."""
    model_dir: Path | None = None
    """What the task's ``build_model`` gets as the site directory (a directory holding a
    pretrained base model); None for tasks that build from the plan alone."""

    @property
    def hooks(self) -> TaskHooks:
        """The task's hooks (:mod:`baton.ml.hooks`), as the sites use them."""
        from baton.ml.hooks import task_hooks

        return task_hooks(self.task if self.task is not None else installed_task(self.schema.task))

    def build_model(self, plan: RunPlan) -> nn.Module:
        """Hop 0's model of ``plan``, as every site builds it."""
        return self.hooks.build_model(plan, self.schema, self.model_dir)

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
