"""One lab cell from a run plan and the sites' own data directories (``baton lab --plan``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.errors import ConfigError
from baton.plan import TrainingSection
from sim.lab.batched import supports_batched
from sim.lab.cells import Grid
from sim.lab.grid import trial_of
from sim.lab.sequential import Progress, sequential_trial
from sim.lab.summary import summarize
from sim.own_data import read_federation

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.lab.oracle import OrderScores

__all__ = [
    "OWN_DATA",
    "PlanCell",
    "by_last_site",
    "check_plan",
    "plan_cell",
    "remedies_label",
    "run_plan_cell",
]

OWN_DATA = "own-data"
"""The ``partition`` the records of a plan's cell carry: the sites' data as they hold it."""

_REMEDY_FIELDS = (
    "lr_schedule",
    "lr_min_ratio",
    "cycle_decay",
    "proximal_mu",
    "proportional_steps",
    "reference_examples",
)
"""``TrainingSection`` fields a record's ``remedies`` names where the plan changes them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanCell:
    """What the records say of a plan's cell (``sim.lab.summary.CellLabels``)."""

    dataset: str
    """The plan's task."""
    k: int
    """Number of sites."""
    local_epochs: int
    """The plan's local epochs per hop."""
    cycles: int
    """The plan's cycles per run."""
    partition_label: str = OWN_DATA
    """The sites' own split of the data."""


def plan_cell(plan: RunPlan) -> PlanCell:
    """The :class:`PlanCell` of ``plan``."""
    return PlanCell(
        dataset=plan.task.dataset,
        k=len(plan.run.sites),
        local_epochs=plan.training.local_epochs,
        cycles=plan.run.cycles,
    )


def check_plan(plan: RunPlan) -> None:
    """Refuses a plan the lab cannot measure.

    Raises:
        ConfigError: The plan has fewer than 2 sites (one order only).
    """
    if len(plan.run.sites) < 2:
        raise ConfigError(
            f"the plan has {len(plan.run.sites)} site; comparing orders needs at least 2"
        )


def remedies_label(training: TrainingSection) -> str:
    """``none``, or the plan's forgetting remedies as ``key=value`` joined by ``+``, as a
    grid's ``remedies_label`` names them."""
    default = TrainingSection()
    items = [
        f"{name}={getattr(training, name)}"
        for name in _REMEDY_FIELDS
        if getattr(training, name) != getattr(default, name)
    ]
    return "+".join(items) if items else "none"


def run_plan_cell(
    plan: RunPlan,
    site_dirs: Mapping[str, Path],
    *,
    test: Path | None = None,
    repetitions: int = 4,
    max_orders: int | None = None,
    progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trains every candidate order of ``plan`` on the sites' own data, ``repetitions``
    times, and places every strategy of ``sim.lab.cells.STRATEGIES`` among them.

    The candidate orders are all orders for up to 6 sites, 720 drawn with the plan's seed
    beyond (with ``max_orders``: all when there are at most that many, else that many
    drawn: ``sim.lab.oracle.plan_orders``); repetition ``r`` uses run seed
    ``plan.run.seed + r``. A plan the lab's batched trainer supports (an MLP by SGD,
    ranked by accuracy: ``sim.lab.batched.supports_batched``) runs as one trial of the
    grid (``sim.lab.grid.trial_of``); any other (a language model ranked by perplexity,
    say) trains every run one at a time with the sites' own trainer through the task's
    hooks (``sim.lab.sequential.sequential_trial``), which ``progress`` reports on. Runs
    are ranked by the plan's primary metric in its direction. The plan's ``[ordering]``
    section is not used: every strategy is measured. Runs are scored on ``test``;
    without it on the sites' validation splits pooled, which the strategies that probe
    also see.

    Returns:
        The records (the grid's keys, ``partition`` :data:`OWN_DATA`) and the meta
        data of ``results.json``, whose ``by_last_site`` gives, per site, the orders that
        end with it and their mean score (:func:`by_last_site`).

    Raises:
        ConfigError: See :func:`check_plan` and ``sim.own_data.read_federation``; also
            ``repetitions`` below 1, ``max_orders`` below 2, or a primary metric the task
            does not compute.
        DataError: A site's or the test's data cannot be read or fails validation.
    """
    if repetitions < 1:
        raise ConfigError(f"--repetitions must be at least 1, not {repetitions}")
    check_plan(plan)
    federation = read_federation(plan, site_dirs, test=test)
    grid = Grid(
        name=f"plan:{plan.run.name}", cells=(), seeds=(plan.run.seed,), repetitions=repetitions
    )
    started = time.perf_counter()
    batched = supports_batched(plan)
    if batched:
        trial = trial_of(plan, federation, grid, seed=plan.run.seed, max_orders=max_orders)
    else:
        trial = sequential_trial(
            plan,
            federation,
            grid,
            seed=plan.run.seed,
            pooled_is_test=test is None,
            max_orders=max_orders,
            progress=progress,
        )
    seconds = time.perf_counter() - started
    records = summarize(plan_cell(plan), [trial], remedies=remedies_label(plan.training))
    for record in records:
        record["skipped_seeds"] = 0
    scored_on = (
        f"held-out test data ({len(federation.test.y)} examples)"
        if test is not None
        else f"the sites' validation splits pooled (no --test): the plan's {plan.task.metric} "
        "on all their examples together; the probing strategies see the same data"
    )
    meta = {
        "grid": grid.name,
        "seconds": seconds,
        "seeds": list(grid.seeds),
        "repetitions": repetitions,
        "torch_threads": 1,
        "jobs": 1,
        "plot": "percentiles.png (matplotlib, Agg) and percentiles.svg",
        "cells_left_out": [],
        "plan": plan.run.name,
        "task": plan.task.dataset,
        "model": plan.model.name,
        "sites": list(plan.run.sites),
        "orders": len(trial.scores.orders),
        "trainer": "batched" if batched else "sequential",
        "metric": plan.task.metric,
        "higher_is_better": plan.task.higher_is_better,
        "scored_on": scored_on,
        "by_last_site": by_last_site(trial.scores),
    }
    return records, meta


def by_last_site(scores: OrderScores) -> list[dict[str, Any]]:
    """Per site (in order of first appearance as a last site), the candidate orders that
    end with it: how many, and the mean, lowest and highest of their scores (each order's
    score being its mean over the repetitions)."""
    means = scores.test.mean(axis=1)
    groups: dict[str, list[float]] = {}
    for order, mean in zip(scores.orders, means, strict=True):
        groups.setdefault(order[-1], []).append(float(mean))
    return [
        {"site": site, "orders": len(v), "mean": float(np.mean(v)), "min": min(v), "max": max(v)}
        for site, v in groups.items()
    ]
