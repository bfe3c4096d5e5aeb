"""The benchmark grid: cells, trials over partition seeds, and one record per strategy."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from baton.data import Federation, Partition, make_federation
from baton.lab.baselines import centralized_accuracy, fedavg_accuracy
from baton.lab.oracle import (
    OrderScores,
    candidate_orders,
    ci95,
    evaluate_orders,
    order_effect,
    percentile_of,
)
from baton.lab.runner import strategy_schedule
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from baton.simulate import simulate_sequential
from ordering import ProbeOutcome, make_strategy

logger = logging.getLogger(__name__)

STRATEGIES: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("fixed", "fixed", {}),
    ("random", "random", {}),
    ("reshuffle", "reshuffle", {}),
    ("by_size:ascending", "by_size", {}),
    ("by_size:descending", "by_size", {"direction": "descending"}),
    ("typicality", "typicality", {}),
    ("path:max", "path", {}),
    ("path:min", "path", {"objective": "min"}),
    ("greedy_loss", "greedy_loss", {}),
    ("learned", "learned", {"explore": "greedy"}),
)
"""(label, strategy name, options) of every strategy the lab compares."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Cell:
    """One setting of the grid."""

    dataset: str
    """``breast_cancer``, ``digits`` or ``wine``."""
    partition: Partition
    """How the data is split across sites."""
    k: int
    """Number of sites."""
    local_epochs: int
    """Local epochs per hop."""
    cycles: int
    """Cycles per run."""

    @property
    def partition_label(self) -> str:
        """``dirichlet-0.1``, ``quantity-0.5``, ...: the partition as the records name it."""
        return f"{self.partition.kind}-{self.partition.alpha:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Grid:
    """A set of cells, each run over the same partition seeds and repetitions."""

    name: str
    """``smoke``, ``reduced`` or ``full``."""
    cells: tuple[Cell, ...]
    """The settings."""
    seeds: tuple[int, ...]
    """Partition seeds (trials) per cell."""
    repetitions: int
    """Repetitions per order; repetition ``r`` uses run seed ``r`` for every order."""
    hidden: tuple[int, ...] = (32,)
    """Hidden layer widths of the MLP."""
    probe_budget_per_site: int = 2
    """Probe runs the learned strategy gets per site (capped at the number of orders)."""
    strategies: tuple[tuple[str, str, Mapping[str, Any]], ...] = field(default=STRATEGIES)
    """Strategies compared."""


def _cells(
    datasets: Sequence[str],
    partitions: Sequence[Partition],
    ks: Sequence[int],
    epochs: Sequence[int],
    cycles: Sequence[int],
) -> tuple[Cell, ...]:
    return tuple(
        Cell(dataset=d, partition=p, k=k, local_epochs=e, cycles=c)
        for d in datasets
        for p in partitions
        for k in ks
        for e in epochs
        for c in cycles
    )


def _dirichlet(alpha: float) -> Partition:
    return Partition(kind="dirichlet", alpha=alpha, min_train_examples=8)


GRIDS: dict[str, Grid] = {
    "smoke": Grid(
        name="smoke",
        cells=_cells(["wine"], [_dirichlet(0.5)], [3], [1], [1]),
        seeds=(0,),
        repetitions=2,
    ),
    "reduced": Grid(
        name="reduced",
        cells=_cells(["digits"], [_dirichlet(0.1), _dirichlet(0.5)], [3, 5], [5], [1, 3]),
        seeds=(0, 1, 2),
        repetitions=2,
    ),
    "full": Grid(
        name="full",
        cells=_cells(
            ["breast_cancer", "digits", "wine"],
            [
                _dirichlet(0.1),
                _dirichlet(0.5),
                _dirichlet(1.0),
                Partition(kind="quantity", alpha=0.5, min_train_examples=8),
            ],
            [3, 5, 7],
            [1, 5],
            [1, 3],
        ),
        seeds=tuple(range(10)),
        repetitions=4,
    ),
}


def lab_plan(cell: Cell, grid: Grid, sites: tuple[str, ...]) -> RunPlan:
    """The run plan of a cell: an MLP, plain SGD (no logit adjustment), the cell's epochs."""
    return RunPlan(
        run=RunSection(name="lab", sites=sites, cycles=cell.cycles, seed=0),
        model=ModelSection(name="mlp", args={"hidden": list(grid.hidden)}),
        task=TaskSection(dataset=cell.dataset),
        training=TrainingSection(
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            batch_size=32,
            local_epochs=cell.local_epochs,
            logit_adjustment=False,
        ),
    )


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Trial:
    """One partition seed of one cell."""

    scores: OrderScores
    """Every candidate order over the repetitions."""
    centralized: float
    """Pooled training, mean test accuracy over the repetitions."""
    chosen: dict[str, list[float]]
    """Label to the test accuracy its schedule reached, one per repetition."""
    best_hits: dict[str, list[bool]]
    """Label to whether its schedule was the best order, one per repetition."""
    extra_runs: dict[str, int]
    """Label to probe runs it used per run."""


def run_trial(cell: Cell, grid: Grid, seed: int) -> Trial:
    """Runs the oracle, the baselines and every strategy for one partition seed."""
    sites = tuple(f"site-{i}" for i in range(cell.k))
    federation = make_federation(cell.dataset, sites, cell.partition, seed=seed)
    plan = lab_plan(cell, grid, sites)
    reps = tuple(range(grid.repetitions))
    scores = evaluate_orders(plan, federation, candidate_orders(sites, seed=seed), reps)
    best = int(np.argmax(scores.test.mean(axis=1)))
    chosen: dict[str, list[float]] = {}
    hits: dict[str, list[bool]] = {}
    extra: dict[str, int] = {}
    central: list[float] = []
    fedavg: list[float] = []
    for r in reps:
        rep_plan = replace(plan, run=replace(plan.run, seed=r))
        central.append(centralized_accuracy(rep_plan, federation))
        fedavg.append(fedavg_accuracy(rep_plan, federation))
        probes = _probes(scores, r, cell.k * grid.probe_budget_per_site, seed)
        for label, name, options in grid.strategies:
            strategy = make_strategy(name, options)
            used = probes if name == "learned" else ()
            schedule = strategy_schedule(strategy, rep_plan, federation, probes=used)
            acc = _accuracy_of(schedule, scores, r, rep_plan, federation)
            chosen.setdefault(label, []).append(acc)
            repeated = all(o == schedule[0] for o in schedule)
            hits.setdefault(label, []).append(repeated and schedule[0] == scores.orders[best])
            extra[label] = len(used)
    chosen["fedavg"] = fedavg
    hits["fedavg"] = [False] * len(reps)
    extra["fedavg"] = 0
    return Trial(
        scores=scores,
        centralized=float(np.mean(central)),
        chosen=chosen,
        best_hits=hits,
        extra_runs=extra,
    )


def _probes(scores: OrderScores, rep: int, budget: int, seed: int) -> tuple[ProbeOutcome, ...]:
    """Probe runs: ``budget`` orders drawn uniformly, their pooled validation accuracy."""
    rows = random.Random(seed * 7919 + rep).sample(
        range(len(scores.orders)), min(budget, len(scores.orders))
    )
    return tuple(
        ProbeOutcome(order=scores.orders[i], metrics={"accuracy": float(scores.val[i, rep])})
        for i in rows
    )


def _accuracy_of(
    schedule: tuple[tuple[str, ...], ...],
    scores: OrderScores,
    rep: int,
    plan: RunPlan,
    federation: Federation,
) -> float:
    if all(o == schedule[0] for o in schedule):
        row = scores.index(schedule[0])
        if row is not None:
            return float(scores.test[row, rep])
    return simulate_sequential(plan, federation, schedule).test_metrics["accuracy"]


def summarize(cell: Cell, trials: Sequence[Trial]) -> list[dict[str, Any]]:
    """One record per strategy (and FedAvg) of a cell, means over the trials."""
    effects = [order_effect(t.scores.test) for t in trials]
    ratio = _mean([e.ratio for e in effects])
    records = []
    for label in trials[0].chosen:
        accs, pcts, regrets, pct_central, hit_rates = [], [], [], [], []
        for t in trials:
            means = t.scores.test.mean(axis=1)
            acc = float(np.mean(t.chosen[label]))
            accs.append(acc)
            pcts.append(percentile_of(acc, means))
            regrets.append(float(means.max()) - acc)
            pct_central.append(100.0 * acc / t.centralized if t.centralized > 0 else math.nan)
            hit_rates.append(float(np.mean(t.best_hits[label])))
        # Percentiles live in [0, 100]; a bound beyond is clipped (nan stays nan).
        pct_lo, pct_hi = (v if math.isnan(v) else min(100.0, max(0.0, v)) for v in ci95(pcts))
        records.append(
            {
                "dataset": cell.dataset,
                "partition": cell.partition_label,
                "k": cell.k,
                "local_epochs": cell.local_epochs,
                "cycles": cell.cycles,
                "strategy": label,
                "trials": len(trials),
                "orders": len(trials[0].scores.orders),
                "repetitions": len(trials[0].scores.seeds),
                "accuracy_mean": float(np.mean(accs)),
                "percentile_mean": float(np.mean(pcts)),
                "ci95": [pct_lo, pct_hi],
                "regret_mean": float(np.mean(regrets)),
                "best_order_rate": float(np.mean(hit_rates)),
                "pct_of_centralized": float(np.mean(pct_central)),
                "centralized_accuracy": float(np.mean([t.centralized for t in trials])),
                "order_noise_ratio": ratio,
                "gap_best_worst": _mean([e.gap for e in effects]),
                "noise_gap": _mean([e.noise_gap for e in effects]),
                "order_sensitive": bool(ratio >= 1.0) if math.isfinite(ratio) else False,
                "extra_runs": trials[0].extra_runs[label],
            }
        )
    return records


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def run_grid(
    grid: Grid, progress: Callable[[str], None] | None = None
) -> tuple[list[dict[str, Any]], float]:
    """Runs every cell of ``grid``; returns the records and the wall-clock seconds."""
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    for n, cell in enumerate(grid.cells, start=1):
        cell_started = time.perf_counter()
        trials = [run_trial(cell, grid, seed) for seed in grid.seeds]
        records.extend(summarize(cell, trials))
        if progress is not None:
            progress(
                f"cell {n}/{len(grid.cells)} {cell.dataset} {cell.partition_label} "
                f"K={cell.k} epochs={cell.local_epochs} cycles={cell.cycles}: "
                f"{time.perf_counter() - cell_started:.1f} s"
            )
    return records, time.perf_counter() - started
