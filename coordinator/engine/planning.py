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

    Raises:
        ConflictError: the strategy returned an order that is not a permutation of the
            run's sites.
    """
    last = min(hop_index, run.total_hops - 1)
    planned = len(store.list_hops(run.run_id))
    if planned > last:
        return
    plan = parse_plan(run.plan_toml, source="run plan")
    while planned <= last:
        plan_cycle(store, run, plan, planned // len(run.sites))
        planned += len(run.sites)


def plan_cycle(store: Store, run: RunRecord, plan: RunPlan, cycle: int) -> None:
    """Chooses the order of ``cycle`` and stores its hops (PENDING); a no-op if planned.

    Raises:
        ConflictError: the strategy returned an order that is not a permutation of the
            run's sites.
    """
    hops = store.list_hops(run.run_id)
    if len(hops) > cycle * len(run.sites):
        return  # already planned
    strategy = make_strategy(plan.ordering.strategy, plan.ordering.options)
    profiles = {s.site_id: s.profile for s in store.list_sites() if s.site_id in run.sites}
    history = tuple(
        HopOutcome(
            cycle=h.cycle,
            site_id=h.site_id,
            metrics_before=h.metrics_before,
            metrics_after=h.metrics_after,
        )
        for h in hops
        if h.state is HopState.COMPLETED
    )
    probes = probe_outcomes(store, plan)
    ctx = OrderingContext(
        sites=run.sites,
        profiles=profiles,
        history=history,
        cycle=cycle,
        seed=plan.run.seed,
        probes=probes,
        metric=plan.task.metric,
        higher_is_better=plan.task.higher_is_better,
    )
    order = strategy.cycle_order(ctx)
    if sorted(order) != sorted(run.sites):
        raise ConflictError(
            f"strategy {strategy.name!r} returned an order that is not a permutation of the sites"
        )
    base = cycle * len(run.sites)
    store.add_hops(
        run.run_id,
        [
            HopRecord(run_id=run.run_id, hop_index=base + i, cycle=cycle, site_id=s)
            for i, s in enumerate(order)
        ],
    )
    informed = f" ({len(probes)} probe run{'s' if len(probes) > 1 else ''})" if probes else ""
    logger.info("run %s cycle %d order%s: %s", run.run_id, cycle, informed, " -> ".join(order))


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
