"""The benchmark grid: cells, trials over partition seeds, and one record per strategy."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from baton.errors import DataError
from baton.plan import RunPlan
from ordering import (
    HopOutcome,
    OrderingContext,
    OrderingStrategy,
    ProbeOutcome,
    ProbePlanner,
    make_strategy,
)
from sim.lab.baselines import centralized_accuracy, fedavg_accuracy
from sim.lab.batched import HOP_METRICS, OrderAccuracies, train_schedules_batched
from sim.lab.cells import GRIDS, REMEDIES, STRATEGIES, Cell, Grid, lab_plan
from sim.lab.metric import require_scored_metric
from sim.lab.oracle import OrderScores, evaluate_orders, plan_orders
from sim.lab.parallel import trials_by_cell
from sim.lab.runner import gather_probes, published_profiles, strategy_schedule
from sim.lab.summary import summarize
from sim.simulate import simulate_sequential
from sim.tasks import Federation, make_federation

__all__ = [
    "GRIDS",
    "REMEDIES",
    "STRATEGIES",
    "Cell",
    "Grid",
    "OracleProber",
    "Skipped",
    "Timed",
    "Trial",
    "TrialRuns",
    "finish_trial",
    "lab_plan",
    "run_grid",
    "run_trial",
    "strategy_rows",
    "trial_of",
    "with_seed",
]

logger = logging.getLogger(__name__)


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
    decide_seconds: dict[str, float] = field(default_factory=dict)
    """Label to the wall-clock seconds its ``cycle_order`` calls took per run (mean)."""
    run_seconds: float = math.nan
    """Wall-clock seconds of one whole simulated run (one order, one by one): what each
    probe run costs."""
    metric: str = "accuracy"
    """The plan's primary metric: what ``scores``, ``centralized`` and ``chosen`` hold."""
    higher_is_better: bool = True
    """Its direction, which ranks orders and strategies."""


class Timed:
    """A strategy whose ``cycle_order`` calls are timed."""

    def __init__(self, inner: OrderingStrategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        started = time.perf_counter()
        try:
            return tuple(self.inner.cycle_order(ctx))
        finally:
            self.seconds += time.perf_counter() - started


@dataclass(frozen=True, kw_only=True, slots=True)
class Skipped:
    """A partition seed whose federation cannot be drawn (too few examples per site)."""

    reason: str
    """Why, as ``baton.ml.data.make_federation`` said."""


def run_trial(cell: Cell, grid: Grid, seed: int) -> Trial | Skipped:
    """Runs the oracle, the baselines and every strategy for one partition seed.

    A seed whose partition cannot give every site its minimum of training examples (a
    small dataset split over many sites with strong skew) is :class:`Skipped`.
    """
    sites = tuple(f"site-{i}" for i in range(cell.k))
    try:
        federation = make_federation(cell.dataset, sites, cell.partition, seed=seed)
    except DataError as exc:
        return Skipped(reason=str(exc))
    return trial_of(lab_plan(cell, grid, sites, federation), federation, grid, seed=seed)


def trial_of(
    plan: RunPlan,
    federation: Federation,
    grid: Grid,
    *,
    seed: int,
    max_orders: int | None = None,
) -> Trial:
    """Runs the oracle, the baselines and every strategy of ``grid`` on ``federation``,
    each run trained as ``plan`` says.

    The candidate orders are those of ``plan.run.sites`` (a sample drawn with ``seed``
    beyond ``sim.lab.oracle.EXHAUSTIVE_MAX_SITES``, or beyond ``max_orders`` orders when
    given: ``sim.lab.oracle.plan_orders``); repetition ``r`` uses run seed
    ``plan.run.seed + r``. Only ``grid``'s repetitions, strategies and probe budgets are
    read, not its cells.

    Raises:
        ConfigError: The plan's primary metric is not accuracy, which the oracle, the
            baselines and batched training score runs by (``sim.lab.metric``).
        ValueError: The plan is one batched training does not support
            (``sim.lab.batched.supports_batched``).
    """
    require_scored_metric(plan, "the ordering lab")
    sign = 1.0 if plan.task.higher_is_better else -1.0
    sites = plan.run.sites
    k = len(sites)
    profiles = published_profiles(federation)
    reps = tuple(plan.run.seed + r for r in range(grid.repetitions))
    orders = plan_orders(sites, seed=seed, max_orders=max_orders)
    scores = evaluate_orders(plan, federation, orders, reps)
    best = int(np.argmax(sign * scores.test.mean(axis=1)))
    chosen: dict[str, list[float]] = {}
    hits: dict[str, list[bool]] = {}
    extra: dict[str, int] = {}
    decide: dict[str, list[float]] = {}
    central: list[float] = []
    fedavg: list[float] = []
    started = time.perf_counter()
    simulate_sequential(plan, federation, [sites] * plan.run.cycles)
    run_seconds = time.perf_counter() - started
    for rep, r in enumerate(reps):
        rep_plan = with_seed(plan, r)
        central.append(centralized_accuracy(rep_plan, federation))
        fedavg.append(fedavg_accuracy(rep_plan, federation))
        runs = TrialRuns(scores, rep, plan, federation)
        schedules: dict[str, tuple[tuple[str, ...], ...]] = {}
        for label, name, options, per_site in strategy_rows(grid, k):
            inner = make_strategy(name, options)
            strategy = Timed(inner)
            used: tuple[ProbeOutcome, ...] = ()
            if isinstance(inner, ProbePlanner):
                used = gather_probes(
                    inner,
                    sites,
                    profiles,
                    seed=r,
                    budget=k * per_site,
                    measure=OracleProber(scores, rep, plan, federation),
                    metric=plan.task.metric,
                    higher_is_better=plan.task.higher_is_better,
                )
            schedules[label] = strategy_schedule(
                strategy, rep_plan, federation, probes=used, history=runs.history
            )
            extra[label] = len(used)
            decide.setdefault(label, []).append(strategy.seconds)
        runs.train(list(schedules.values()))
        for label, schedule in schedules.items():
            chosen.setdefault(label, []).append(runs.test_accuracy(schedule))
            repeated = all(o == schedule[0] for o in schedule)
            hits.setdefault(label, []).append(repeated and schedule[0] == scores.orders[best])
    chosen["fedavg"] = fedavg
    return finish_trial(plan, scores, central, chosen, hits, extra, decide, run_seconds)


def finish_trial(
    plan: RunPlan,
    scores: OrderScores,
    central: Sequence[float],
    chosen: dict[str, list[float]],
    hits: dict[str, list[bool]],
    extra: dict[str, int],
    decide: dict[str, list[float]],
    run_seconds: float,
) -> Trial:
    """The :class:`Trial` of what a trial measured; FedAvg (in ``chosen``) gets no hits,
    no probe runs and no planning time."""
    hits["fedavg"] = [False] * len(chosen["fedavg"])
    extra["fedavg"] = 0
    decide["fedavg"] = [0.0]
    return Trial(
        scores=scores,
        centralized=float(np.mean(central)),
        chosen=chosen,
        best_hits=hits,
        extra_runs=extra,
        decide_seconds={k: float(np.mean(v)) for k, v in decide.items()},
        run_seconds=run_seconds,
        metric=plan.task.metric,
        higher_is_better=plan.task.higher_is_better,
    )


def strategy_rows(grid: Grid, k: int) -> list[tuple[str, str, Mapping[str, Any], int]]:
    """``(label, strategy name, options, probe runs per site)`` of every strategy ``grid``
    compares among ``k`` sites: its strategies, then its larger-budget ``learned`` rows."""
    rows = [
        (label, name, options, grid.probe_budget_per_site)
        for label, name, options in grid.strategies
    ]
    rows += [
        (label, "learned", {}, per_site)
        for label, per_site, largest in grid.budget_rows
        if k <= largest
    ]
    return rows


def with_seed(plan: RunPlan, seed: int) -> RunPlan:
    """``plan`` with run seed ``seed``."""
    return replace(plan, run=replace(plan.run, seed=seed))


class OracleProber:
    """Answers probe runs for repetition ``rep`` of a trial, never with its own run seed."""

    def __init__(
        self, scores: OrderScores, rep: int, plan: RunPlan, federation: Federation
    ) -> None:
        self.scores = scores
        self.rep = rep
        self.plan = plan
        self.federation = federation

    def __call__(self, order: tuple[str, ...], repetition: int) -> dict[str, float]:
        reps = len(self.scores.seeds)
        row = self.scores.index(order)
        if repetition < reps - 1:
            column = (self.rep + 1 + repetition) % reps
            if row is not None:
                return {
                    "accuracy": float(self.scores.val[row, column]),
                    "loss": float(self.scores.val_loss[row, column]),
                }
            seed = self.scores.seeds[column]
        else:
            seed = max(self.scores.seeds) + 1 + repetition
        plan = with_seed(self.plan, seed)
        run = train_schedules_batched(plan, self.federation, [[order] * plan.run.cycles])
        return {"accuracy": float(run.val[0]), "loss": float(run.val_loss[0])}


Schedule = tuple[tuple[str, ...], ...]


class TrialRuns:
    """Runs of repetition ``rep`` of a trial: read from the oracle where it trained them
    (an order repeated every cycle), else trained once and kept."""

    def __init__(
        self, scores: OrderScores, rep: int, plan: RunPlan, federation: Federation
    ) -> None:
        self.scores = scores
        self.rep = rep
        self.plan = with_seed(plan, scores.seeds[rep])
        self.federation = federation
        self._trained: dict[Schedule, tuple[OrderAccuracies, int]] = {}
        """Schedules trained here: the batch that trained each, and its row there."""

    def _oracle_row(self, schedule: Schedule) -> int | None:
        if len(schedule) > self.plan.run.cycles or any(o != schedule[0] for o in schedule):
            return None
        return self.scores.index(schedule[0])

    def train(self, schedules: Sequence[Schedule]) -> None:
        """Trains, together, the schedules that neither the oracle nor this object holds."""
        by_cycles: dict[int, list[Schedule]] = {}
        for s in dict.fromkeys(schedules):
            if s not in self._trained and self._oracle_row(s) is None:
                by_cycles.setdefault(len(s), []).append(s)
        for group in by_cycles.values():
            acc = train_schedules_batched(self.plan, self.federation, group)
            for i, s in enumerate(group):
                self._trained[s] = (acc, i)

    def test_accuracy(self, schedule: Schedule) -> float:
        """The final model's test accuracy (``schedule`` spans the whole run)."""
        row = self._oracle_row(schedule)
        if row is not None:
            return float(self.scores.test[row, self.rep])
        self.train([schedule])
        acc, i = self._trained[schedule]
        return float(acc.test[i])

    def history(self, schedule: Schedule) -> tuple[HopOutcome, ...]:
        """:data:`sim.lab.runner.History` of a run of ``schedule``."""
        n_hops = sum(len(o) for o in schedule)
        row = self._oracle_row(schedule)
        if row is not None:
            before = self.scores.before[row, self.rep, :n_hops]
            after = self.scores.after[row, self.rep, :n_hops]
        else:
            self.train([schedule])
            acc, i = self._trained[schedule]
            before, after = acc.before[i], acc.after[i]
        hops = [(c, s) for c, order in enumerate(schedule) for s in order]
        return tuple(
            HopOutcome(
                cycle=c,
                site_id=s,
                metrics_before=self._metrics(s, before[h]),
                metrics_after=self._metrics(s, after[h]),
            )
            for h, (c, s) in enumerate(hops)
        )

    def _metrics(self, site: str, values: np.ndarray[Any, Any]) -> dict[str, float]:
        metrics = {m: float(v) for m, v in zip(HOP_METRICS, values, strict=True)}
        metrics["num_examples"] = float(len(self.federation.sites[site].val.y))
        return metrics


def run_grid(
    grid: Grid, progress: Callable[[str], None] | None = None, *, jobs: int = 1
) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """Runs every cell of ``grid``; returns the records, the wall-clock seconds and the
    cells left out.

    ``jobs`` worker processes run the trials (``sim.lab.parallel``); the records are
    the same for any ``jobs`` (but for measured seconds) and come in the grid's order.
    A cell's records summarize the seeds that could be partitioned (``trials``, and
    ``skipped_seeds`` for the others); a cell none of whose seeds could be is left out
    and listed with the reason.

    Raises:
        ValueError: ``jobs`` is below 1.
    """
    started = time.perf_counter()
    cells = [grid.effective(nominal) for nominal in grid.cells]
    per_cell: dict[int, list[dict[str, Any]]] = {}
    left_out: dict[int, dict[str, Any]] = {}
    for finished, (i, outcomes) in enumerate(
        trials_by_cell(cells, grid, run_trial, jobs=jobs), start=1
    ):
        cell = cells[i]
        trials = [t for t in outcomes if isinstance(t, Trial)]
        skipped = [t.reason for t in outcomes if isinstance(t, Skipped)]
        per_cell[i] = summarize(cell, trials, remedies=grid.remedies_label) if trials else []
        for record in per_cell[i]:
            record["skipped_seeds"] = len(skipped)
        if not trials:
            left_out[i] = {
                "dataset": cell.dataset,
                "partition": cell.partition_label,
                "k": cell.k,
                "local_epochs": cell.local_epochs,
                "cycles": cell.cycles,
                "reason": skipped[0],
            }
        if progress is not None:
            progress(
                f"cell {i + 1}/{len(cells)} ({finished} done) {cell.dataset} "
                f"{cell.partition_label} K={cell.k} epochs={cell.local_epochs} "
                f"cycles={cell.cycles}: {time.perf_counter() - started:.1f} s elapsed"
            )
    records = [r for i in range(len(cells)) for r in per_cell[i]]
    return records, time.perf_counter() - started, [left_out[i] for i in sorted(left_out)]
