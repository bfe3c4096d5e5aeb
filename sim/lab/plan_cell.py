"""One lab cell from a run plan and the sites' own data directories (``baton lab --plan``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baton.errors import ConfigError
from baton.plan import TrainingSection
from sim.lab.batched import unsupported_by_batched
from sim.lab.cells import Grid
from sim.lab.grid import trial_of
from sim.lab.summary import summarize
from sim.own_data import read_federation

if TYPE_CHECKING:
    from baton.plan import RunPlan

__all__ = ["OWN_DATA", "PlanCell", "check_plan", "plan_cell", "remedies_label", "run_plan_cell"]

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
        ConfigError: The plan has fewer than 2 sites (one order only), or a model or
            training option the lab's batched trainer does not support
            (``sim.lab.batched.unsupported_by_batched``): the lab trains hundreds of runs
            of every order, which one by one would take hundreds of times a simulation.
    """
    if len(plan.run.sites) < 2:
        raise ConfigError(
            f"the plan has {len(plan.run.sites)} site; comparing orders needs at least 2"
        )
    unsupported = unsupported_by_batched(plan)
    if unsupported:
        raise ConfigError(
            "baton lab --plan trains every order with the lab's batched trainer, which "
            f"does not support the plan's {', '.join(unsupported)}; "
            "try the plan with 'baton simulate' instead"
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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trains every candidate order of ``plan`` on the sites' own data, ``repetitions``
    times, and places every strategy of ``sim.lab.cells.STRATEGIES`` among them.

    The cell runs as one trial of the grid (``sim.lab.grid.trial_of``): all orders for up
    to 6 sites, 720 drawn with the plan's seed beyond; repetition ``r`` uses run seed
    ``plan.run.seed + r``. The plan's ``[ordering]`` section is not used: every strategy
    is measured. Runs are scored on ``test``; without it on the sites' validation splits
    pooled (each site's validation accuracy weighted by its examples), which the
    strategies that probe also see.

    Returns:
        The records (the grid's keys, ``partition`` :data:`OWN_DATA`) and the meta
        data of ``results.json``.

    Raises:
        ConfigError: See :func:`check_plan` and ``sim.own_data.read_federation``; also
            ``repetitions`` below 1.
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
    trial = trial_of(plan, federation, grid, seed=plan.run.seed)
    seconds = time.perf_counter() - started
    records = summarize(plan_cell(plan), [trial], remedies=remedies_label(plan.training))
    for record in records:
        record["skipped_seeds"] = 0
    scored_on = (
        f"held-out test data ({len(federation.test.y)} examples)"
        if test is not None
        else "the sites' validation splits pooled (no --test): each site's validation "
        "accuracy weighted by its examples; the probing strategies see the same data"
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
        "scored_on": scored_on,
    }
    return records, meta
