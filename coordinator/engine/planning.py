"""Cycle planning: each cycle's order comes from the plan's ``ordering`` strategy, fed with
the site profiles, the completed hops, the probe runs' outcomes and the plan's primary
metric with its direction (``[task] metric`` and ``higher_is_better``).

A cycle is planned when the previous cycle's last hop is assigned, so every assignment
names its recipient and the strategy sees every completed hop of the earlier cycles.
"""

from __future__ import annotations

import logging

from baton.errors import ConfigError, ConflictError, NotFoundError
from baton.plan import RunPlan, parse_plan
from coordinator.store.base import EventKind, HopRecord, HopState, RunRecord, Store
from ordering import HopOutcome, OrderingContext, ProbeOutcome, make_strategy

logger = logging.getLogger(__name__)


def plan_through(store: Store, run: RunRecord, hop_index: int) -> None:
    """Plans cycles until hop ``hop_index`` (capped at the run's last hop) is planned.

    Cycles are appended whole after the last planned hop (a cycle that lost a hop to
    ``skip`` or ``reroute`` is shorter), so a hop's cycle is its record's, not its index
    divided by the number of sites.

    Raises:
        ConflictError: the strategy returned an order that is not a permutation of the
            run's sites.
    """
    last = min(hop_index, run.total_hops - 1)
    hops = store.list_hops(run.run_id)
    if len(hops) > last:
        return
    plan = parse_plan(run.plan_toml, source="run plan")
    cycle = hops[-1].cycle + 1 if hops else 0
    while len(hops) <= last and cycle < run.cycles:
        plan_cycle(store, run, plan, cycle)
        hops, cycle = store.list_hops(run.run_id), cycle + 1


def plan_cycle(store: Store, run: RunRecord, plan: RunPlan, cycle: int) -> None:
    """Chooses the order of ``cycle`` and stores its hops (PENDING) after the last one;
    a no-op if planned.

    Raises:
        ConflictError: the strategy returned an order that is not a permutation of the
            run's sites.
    """
    hops = store.list_hops(run.run_id)
    if hops and hops[-1].cycle >= cycle:
        return  # already planned
    order = strategy_order(store, run, plan, cycle)
    base = len(hops)
    store.add_hops(
        run.run_id,
        [
            HopRecord(run_id=run.run_id, hop_index=base + i, cycle=cycle, site_id=s)
            for i, s in enumerate(order)
        ],
    )
    probes = plan.ordering.probe_runs
    informed = f" ({len(probes)} probe run{'s' if len(probes) > 1 else ''})" if probes else ""
    logger.info("run %s cycle %d order%s: %s", run.run_id, cycle + 1, informed, " -> ".join(order))


def strategy_order(store: Store, run: RunRecord, plan: RunPlan, cycle: int) -> tuple[str, ...]:
    """The order the plan's strategy gives the run's sites in ``cycle``, seeing every
    completed hop so far.

    Raises:
        ConflictError: the strategy returned an order that is not a permutation of the
            run's sites.
    """
    strategy = make_strategy(plan.ordering.strategy, plan.ordering.options)
    profiles = {s.site_id: s.profile for s in store.list_sites() if s.site_id in run.sites}
    history = tuple(
        HopOutcome(
            cycle=h.cycle,
            site_id=h.site_id,
            metrics_before=h.metrics_before,
            metrics_after=h.metrics_after,
        )
        for h in store.list_hops(run.run_id)
        if h.state is HopState.COMPLETED
    )
    ctx = OrderingContext(
        sites=run.sites,
        profiles=profiles,
        history=history,
        cycle=cycle,
        seed=plan.run.seed,
        probes=probe_outcomes(store, plan),
        metric=plan.task.metric,
        higher_is_better=plan.task.higher_is_better,
    )
    order = tuple(strategy.cycle_order(ctx))
    if sorted(order) != sorted(run.sites):
        raise ConflictError(
            f"strategy {strategy.name!r} returned an order that is not a permutation of the sites"
        )
    return order


def check_probe_runs(store: Store, plan: RunPlan) -> None:
    """Refuses probe runs that cannot inform this plan's order.

    Raises:
        ConfigError: a probe run does not exist, trained other sites, or was not
            evaluated at the sites.
    """
    for probe_id in plan.ordering.probe_runs:
        try:
            probe = store.get_run(probe_id)
        except NotFoundError:
            raise ConfigError(f"probe run {probe_id!r} does not exist") from None
        if sorted(probe.sites) != sorted(plan.run.sites):
            raise ConfigError(f"probe run {probe_id!r} trained other sites than this plan")
        if not parse_plan(probe.plan_toml, source="probe run plan").run.evaluate_at_sites:
            raise ConfigError(
                f"probe run {probe_id!r} was not evaluated at the sites ([run] evaluate_at_sites)"
            )


def probe_outcomes(store: Store, plan: RunPlan) -> tuple[ProbeOutcome, ...]:
    """The probe runs' first-cycle orders and final validation metrics, averaged over the
    sites that evaluated them (weighted by validation examples); a probe run no site has
    evaluated yet is left out."""
    out = []
    for probe_id in plan.ordering.probe_runs:
        evaluations = [
            e.metrics for e in store.list_events(probe_id) if e.kind is EventKind.SITE_EVALUATED
        ]
        weights = [m.get("num_examples", 1.0) for m in evaluations]
        names = set.intersection(*(set(m) for m in evaluations)) if evaluations else set()
        names.discard("num_examples")
        if not names or sum(weights) <= 0:
            continue
        order = tuple(h.site_id for h in store.list_hops(probe_id) if h.cycle == 0)
        mean = {
            k: sum(w * m[k] for w, m in zip(weights, evaluations, strict=True)) / sum(weights)
            for k in sorted(names)
        }
        out.append(ProbeOutcome(order=order, metrics=mean))
    return tuple(out)
