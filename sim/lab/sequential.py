"""The lab's slow path: every order trained one run at a time with the sites' own trainer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.errors import ConfigError
from ordering import HopOutcome, ProbeOutcome, ProbePlanner, make_strategy
from sim.lab.baselines import fedavg_metrics
from sim.lab.batched import HOP_METRICS, pooled_val
from sim.lab.grid import Timed, Trial, finish_trial, strategy_rows, with_seed
from sim.lab.oracle import OrderScores, plan_orders
from sim.lab.runner import gather_probes, outcomes_of, published_profiles, strategy_schedule
from sim.simulate import simulate_sequential, train_centralized

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.lab.cells import Grid
    from sim.tasks import Federation

__all__ = ["Progress", "SequentialRuns", "sequential_trial"]

Schedule = tuple[tuple[str, ...], ...]
"""One order of site ids per cycle."""
Progress = Callable[[str], None]
"""Where the slow path says what it has done (a line at a time)."""


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Run:
    """One trained run of a schedule with one run seed."""

    test: float
    """The final model's primary metric on the federation's held-out set."""
    val: dict[str, float]
    """The final model's metrics on the sites' validation splits pooled (what probes see)."""
    hops: tuple[HopOutcome, ...]
    """Every hop, as a coordinator records it."""
    seconds: float
    """Wall-clock seconds the run took."""


class SequentialRuns:
    """Runs of ``plan`` trained by :func:`sim.simulate.simulate_sequential`, each schedule
    and run seed once.

    Constraints: a run's scores MUST come from the plan's primary metric, which the task's
    metrics MUST hold (else :class:`ConfigError`).
    """

    def __init__(
        self,
        plan: RunPlan,
        federation: Federation,
        *,
        pooled_is_test: bool,
        progress: Progress | None = None,
    ) -> None:
        self.plan = plan
        self.federation = federation
        self.pooled_is_test = pooled_is_test
        self.progress = progress
        self._runs: dict[tuple[Schedule, int], Run] = {}
        self._started = time.perf_counter()

    @property
    def trained(self) -> int:
        """How many runs have been trained."""
        return len(self._runs)

    def run(self, schedule: Sequence[Sequence[str]], seed: int) -> Run:
        """The run of ``schedule`` with run seed ``seed``, trained on first use."""
        key = (tuple(tuple(o) for o in schedule), seed)
        if key in self._runs:
            return self._runs[key]
        metric = self.plan.task.metric
        started = time.perf_counter()
        plan = with_seed(self.plan, seed)
        result = simulate_sequential(plan, self.federation, key[0])
        if metric not in result.test_metrics:
            raise ConfigError(
                f"the plan's primary metric {metric!r} is not among the task's metrics "
                f"({', '.join(sorted(result.test_metrics))})"
            )
        val = dict(result.test_metrics)
        if not self.pooled_is_test:
            hooks = self.federation.hooks
            model = self.federation.build_model(plan)
            hooks.load_travelling(model, result.state)
            val = hooks.evaluate(model, pooled_val(self.federation))
        run = Run(
            test=float(result.test_metrics[metric]),
            val=val,
            hops=outcomes_of(result.hops),
            seconds=time.perf_counter() - started,
        )
        self._runs[key] = run
        if self.progress is not None:
            self.progress(
                f"run {len(self._runs)} ({_label(key[0])}, seed {seed}): {metric} "
                f"{run.test:.4f} in {run.seconds:.1f} s, "
                f"{time.perf_counter() - self._started:.0f} s in all"
            )
        return run

    def hops(self, schedule: Schedule, seed: int) -> tuple[HopOutcome, ...]:
        """The hops of a run of ``schedule`` (``sim.lab.runner.History``): the first hops
        of a whole run of the same order where one was trained, else a run of it."""
        order = schedule[0] if schedule else ()
        whole = ((order,) * self.plan.run.cycles, seed)
        if all(o == order for o in schedule) and whole in self._runs:
            return self._runs[whole].hops[: len(order) * len(schedule)]
        return self.run(schedule, seed).hops

    def probe(
        self, order: tuple[str, ...], repetition: int, *, rep: int, seeds: Sequence[int]
    ) -> dict[str, float]:
        """A probe run for repetition ``rep``, never with its own run seed: as
        ``sim.lab.grid.OracleProber`` picks seeds, on the pooled validation splits."""
        reps = len(seeds)
        if repetition < reps - 1:
            seed = seeds[(rep + 1 + repetition) % reps]
        else:
            seed = max(seeds) + 1 + repetition
        return self.run((order,) * self.plan.run.cycles, seed).val


def sequential_trial(
    plan: RunPlan,
    federation: Federation,
    grid: Grid,
    *,
    seed: int,
    pooled_is_test: bool,
    max_orders: int | None = None,
    progress: Progress | None = None,
) -> Trial:
    """:func:`sim.lab.grid.trial_of` for any task: every run trained one by one by the
    sites' own trainer (the task's hooks), scored by the plan's primary metric in its
    direction.

    The candidate orders are ``sim.lab.oracle.plan_orders``; each is trained once per
    repetition (run seed ``plan.run.seed + r``) and scored on ``federation.test``
    (``pooled_is_test``: it is the sites' validation splits pooled, which the probes then
    read too). The baselines are pooled training (``train_centralized``) and FedAvg of the
    state that travels (``sim.lab.baselines.fedavg_metrics``); every strategy of ``grid``
    is placed among the orders as the fast path places it, a schedule the orders do not
    hold (or a probe with a seed they lack) being trained on first use.

    Raises:
        ConfigError: The task's metrics lack the plan's primary metric; ``max_orders``
            below 2.
    """
    sign = 1.0 if plan.task.higher_is_better else -1.0
    metric = plan.task.metric
    sites = plan.run.sites
    cycles = plan.run.cycles
    orders = plan_orders(sites, seed=seed, max_orders=max_orders)
    seeds = tuple(plan.run.seed + r for r in range(grid.repetitions))
    runs = SequentialRuns(plan, federation, pooled_is_test=pooled_is_test, progress=progress)
    if progress is not None:
        progress(
            f"{len(orders)} orders x {len(seeds)} repetitions = {len(orders) * len(seeds)} "
            "runs, one at a time with the sites' own trainer"
        )
    hops = len(sites) * cycles
    test = np.zeros((len(orders), len(seeds)))
    val, val_loss = np.zeros_like(test), np.zeros_like(test)
    before = np.full((len(orders), len(seeds), hops, len(HOP_METRICS)), math.nan)
    after = np.full_like(before, math.nan)
    seconds: list[float] = []
    for r, run_seed in enumerate(seeds):
        for i, order in enumerate(orders):
            run = runs.run((order,) * cycles, run_seed)
            seconds.append(run.seconds)
            test[i, r] = run.test
            val[i, r] = run.val[metric]
            val_loss[i, r] = run.val.get("loss", math.nan)
            for h, hop in enumerate(run.hops):
                before[i, r, h] = [hop.metrics_before.get(m, math.nan) for m in HOP_METRICS]
                after[i, r, h] = [hop.metrics_after.get(m, math.nan) for m in HOP_METRICS]
    run_seconds = float(np.mean(seconds))
    scores = OrderScores(
        orders=orders,
        seeds=seeds,
        test=test,
        val=val,
        val_loss=val_loss,
        before=before,
        after=after,
    )
    best = orders[int(np.argmax(sign * test.mean(axis=1)))]
    chosen: dict[str, list[float]] = {}
    hits: dict[str, list[bool]] = {}
    extra: dict[str, int] = {}
    decide: dict[str, list[float]] = {}
    central: list[float] = []
    fedavg: list[float] = []
    profiles = published_profiles(federation)
    for rep, run_seed in enumerate(seeds):
        rep_plan = with_seed(plan, run_seed)
        central.append(float(train_centralized(rep_plan, federation)[metric]))
        fedavg.append(float(fedavg_metrics(rep_plan, federation)[metric]))
        for label, name, options, per_site in strategy_rows(grid, len(sites)):
            inner = make_strategy(name, options)
            strategy = Timed(inner)
            used: tuple[ProbeOutcome, ...] = ()
            if isinstance(inner, ProbePlanner):
                used = gather_probes(
                    inner,
                    sites,
                    profiles,
                    seed=run_seed,
                    budget=len(sites) * per_site,
                    measure=_prober(runs, rep, seeds),
                    metric=metric,
                    higher_is_better=plan.task.higher_is_better,
                )
            schedule = strategy_schedule(
                strategy, rep_plan, federation, probes=used, history=_history(runs, run_seed)
            )
            chosen.setdefault(label, []).append(runs.run(schedule, run_seed).test)
            repeated = all(o == schedule[0] for o in schedule)
            hits.setdefault(label, []).append(repeated and schedule[0] == best)
            extra[label] = len(used)
            decide.setdefault(label, []).append(strategy.seconds)
        if progress is not None:
            progress(f"repetition {rep + 1}/{len(seeds)}: baselines and strategies placed")
    chosen["fedavg"] = fedavg
    return finish_trial(plan, scores, central, chosen, hits, extra, decide, run_seconds)


def _prober(
    runs: SequentialRuns, rep: int, seeds: Sequence[int]
) -> Callable[[tuple[str, ...], int], dict[str, float]]:
    def measure(order: tuple[str, ...], repetition: int) -> dict[str, float]:
        return runs.probe(order, repetition, rep=rep, seeds=seeds)

    return measure


def _history(runs: SequentialRuns, seed: int) -> Callable[[Schedule], Any]:
    def hops(schedule: Schedule) -> tuple[HopOutcome, ...]:
        return runs.hops(schedule, seed)

    return hops


def _label(schedule: Schedule) -> str:
    """``a > b > c`` for a schedule repeating one order; its cycles joined by `` | ``."""
    if all(o == schedule[0] for o in schedule):
        return " > ".join(schedule[0])
    return " | ".join(" > ".join(o) for o in schedule)
