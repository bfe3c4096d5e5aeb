"""Drives ordering strategies through simulated runs, as the coordinator would."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from baton.ml.data import profile_of
from ordering import HopOutcome, OrderingContext, OrderingStrategy, ProbeOutcome, ProbePlanner
from sim.simulate import simulate_sequential

if TYPE_CHECKING:
    from baton.domain import DataProfile
    from baton.plan import RunPlan
    from sim.simulate import HopRecord
    from sim.tasks import Federation

__all__ = [
    "History",
    "context_for",
    "gather_probes",
    "outcomes_of",
    "published_profiles",
    "simulated_history",
    "strategy_schedule",
]


def published_profiles(federation: Federation) -> dict[str, DataProfile]:
    """What each site publishes (``baton.ml.data.profile_of``): sizes, histograms, schema hash."""
    return {s: profile_of(federation.schema, d) for s, d in federation.sites.items()}


History = Callable[[tuple[tuple[str, ...], ...]], Sequence[HopOutcome]]
"""The hops of a run of a schedule (one order per cycle) as a coordinator records them:
each hop's site and its validation metrics before and after training."""


def outcomes_of(records: Sequence[HopRecord]) -> tuple[HopOutcome, ...]:
    """Simulated hops as a coordinator sees them: site, cycle and metrics, nothing else."""
    return tuple(
        HopOutcome(
            cycle=h.cycle,
            site_id=h.site,
            metrics_before=dict(h.metrics_before),
            metrics_after=dict(h.metrics_after),
        )
        for h in records
    )


def simulated_history(plan: RunPlan, federation: Federation) -> History:
    """:data:`History` from :func:`simulate_sequential`, the sites' own trainer."""

    def hops(schedule: tuple[tuple[str, ...], ...]) -> tuple[HopOutcome, ...]:
        return outcomes_of(simulate_sequential(plan, federation, schedule).hops)

    return hops


def context_for(
    sites: Sequence[str],
    profiles: Mapping[str, DataProfile],
    hops: Sequence[HopOutcome],
    *,
    cycle: int,
    seed: int,
    probes: Sequence[ProbeOutcome] = (),
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> OrderingContext:
    """The context a coordinator would give a strategy planning ``cycle``, ranking by the
    run's primary metric ``metric`` in its direction (the plan's ``[task]`` keys).

    The coordinator plans cycle ``c`` when the last hop of cycle ``c - 1`` asks who is
    next, so that hop's metrics are not in the history: only the first
    ``cycle * K - 1`` hops are (all of them for cycle 0, which has none).
    """
    known = max(0, cycle * len(sites) - 1)
    return OrderingContext(
        sites=tuple(sites),
        profiles=dict(profiles),
        history=tuple(hops[:known]),
        cycle=cycle,
        seed=seed,
        probes=tuple(probes),
        metric=metric,
        higher_is_better=higher_is_better,
    )


def strategy_schedule(
    strategy: OrderingStrategy,
    plan: RunPlan,
    federation: Federation,
    *,
    probes: Sequence[ProbeOutcome] = (),
    history: History | None = None,
) -> tuple[tuple[str, ...], ...]:
    """The orders a strategy gives every cycle of a simulated run of ``plan``.

    Cycle ``c`` is planned from :func:`context_for` over the hops of a run of the cycles
    planned so far, from ``history`` (default: :func:`simulated_history`, the sites' own
    trainer). The strategy sees only that context.

    Raises:
        ValueError: The strategy returned something other than a permutation.
    """
    sites = tuple(federation.sites)
    profiles = published_profiles(federation)
    schedule: list[tuple[str, ...]] = []
    hops_of = history or simulated_history(plan, federation)
    hops: Sequence[HopOutcome] = ()
    for cycle in range(plan.run.cycles):
        if cycle > 0:
            hops = hops_of(tuple(schedule))
        ctx = context_for(
            sites,
            profiles,
            hops,
            cycle=cycle,
            seed=plan.run.seed,
            probes=probes,
            metric=plan.task.metric,
            higher_is_better=plan.task.higher_is_better,
        )
        order = tuple(strategy.cycle_order(ctx))
        if sorted(order) != sorted(sites):
            raise ValueError(f"strategy {strategy.name!r} returned {list(order)}")
        schedule.append(order)
    return tuple(schedule)


def gather_probes(
    planner: ProbePlanner,
    sites: Sequence[str],
    profiles: Mapping[str, DataProfile],
    *,
    seed: int,
    budget: int,
    measure: Callable[[tuple[str, ...], int], Mapping[str, float]],
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> tuple[ProbeOutcome, ...]:
    """Asks ``planner`` for probe runs until ``budget`` are made or it stops.

    Each probe is planned from a cycle-0 context holding the profiles and the probes so
    far; ``measure(order, repetition)`` trains the order end to end and returns the
    final model's metrics on the sites' validation splits pooled (``accuracy`` and
    ``loss``, as sites report them), ``repetition`` counting earlier probes of the same
    order (the runner gives each repetition its own run seed). The planner ranks them
    by the run's primary metric ``metric`` in its direction.

    Raises:
        ValueError: The planner returned something other than a permutation.
    """
    probes: list[ProbeOutcome] = []
    made: dict[tuple[str, ...], int] = {}
    while len(probes) < budget:
        ctx = context_for(
            sites,
            profiles,
            (),
            cycle=0,
            seed=seed,
            probes=probes,
            metric=metric,
            higher_is_better=higher_is_better,
        )
        order = planner.next_probe(ctx, budget)
        if order is None:
            break
        order = tuple(order)
        if sorted(order) != sorted(sites):
            raise ValueError(f"probe planner returned {list(order)}")
        metrics = dict(measure(order, made.get(order, 0)))
        made[order] = made.get(order, 0) + 1
        probes.append(ProbeOutcome(order=order, metrics=metrics))
    return tuple(probes)
