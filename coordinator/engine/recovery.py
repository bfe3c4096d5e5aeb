"""Carries out the ``[faults]`` policy of a run: gathers the facts about a lost site or a
failed hop, asks :func:`coordinator.engine.faults.decide`, records the decision as an
event and an audit entry, and changes the hops accordingly.

Skip and reroute lose one hop and no model: the hops after the lost one are planned
again one place earlier, and the site of the last completed hop is offered that hop
again, to re-seal its kept output for the new recipient (its second CompleteHop replaces
the output and manifest); only then does the chain go on (see docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from baton.plan import RunPlan, parse_plan
from coordinator.engine.assignments import Assignments
from coordinator.engine.clocks import HopClocks
from coordinator.engine.faults import Action, Decision, Fault, FaultFacts, decide
from coordinator.engine.journal import Journal
from coordinator.engine.planning import strategy_order
from coordinator.store.base import EventKind, HopRecord, HopState, RunRecord, RunState, Store

logger = logging.getLogger(__name__)


class Recovery:
    """Decides and applies fault actions, inside the caller's transaction.

    Args:
        store: Durable state.
        journal: Where decisions are recorded.
        assignments: Offers a hop again to a site whose stream already had it.
        clocks: The hops' deadlines, started again when a hop is offered again.
        lease_seconds: A site heard from longer ago is offline.
        revoked: Whether a certificate (PEM) is revoked.
        advance: Re-drives a run (assigns its next hop).
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        assignments: Assignments,
        clocks: HopClocks,
        *,
        lease_seconds: float,
        revoked: Callable[[bytes], bool],
        advance: Callable[[str], None],
    ) -> None:
        self._store = store
        self._journal = journal
        self._assignments = assignments
        self._clocks = clocks
        self.lease_ms = int(lease_seconds * 1000)
        self._revoked = revoked
        self._advance = advance

    def alive(self, site_id: str) -> bool:
        """Whether ``site_id`` is registered, its lease live and its certificates not revoked."""
        site = next((s for s in self._store.list_sites() if s.site_id == site_id), None)
        if site is None or self._journal.clock() - site.last_seen_ms > self.lease_ms:
            return False
        pems = (site.certificate_pem, site.signing_certificate_pem, site.encryption_certificate_pem)
        return not any(p and self._revoked(p.encode()) for p in pems)

    def handle(
        self, run_id: str, hop_index: int, fault: Fault, detail: str = "", *, site_id: str = ""
    ) -> Decision | None:
        """Decides what to do with hop ``hop_index`` (lost or failed) and does it.

        A lost hop found outside the transaction (``site_id`` its site then) is left alone,
        returning None, if it moved on meanwhile: completed, or offered to another site.
        """
        run = self._store.get_run(run_id)
        plan = parse_plan(run.plan_toml, source="run plan")
        hop = self._store.get_hop(run_id, hop_index)
        if fault is Fault.LOST and (
            run.state is not RunState.RUNNING
            or hop.state is not HopState.ASSIGNED
            or (site_id and hop.site_id != site_id)
        ):
            return None
        decision = decide(plan.faults, fault, self._facts(run, hop))
        message = decision.reason + (f": {detail}" if detail else "")
        if decision.action is Action.WAIT and fault is Fault.LOST:
            message = f"site {hop.site_id} offline since {self._last_seen(hop.site_id)}; {message}"
        self._journal.event(
            run_id,
            EventKind.FAULT,
            hop_index=hop_index,
            site_id=hop.site_id,
            message=f"{decision.action.value}: {message}",
            metrics={"cycle": float(hop.cycle), decision.action.value: 1.0},
        )
        self._journal.record(
            "fault_decided",
            run_id,
            hop=hop_index,
            detail={"site": hop.site_id, "fault": fault.value, "action": decision.action.value},
        )
        logger.warning("run %s: %s: %s", run_id, decision.action.value, message)
        if decision.action is Action.ABORT:
            if hop.state in (HopState.PENDING, HopState.ASSIGNED):
                self._store.fail_hop(run_id, hop_index, error=message)
            self.end_failed(run_id, message)
        elif decision.action is Action.RETRY or (
            decision.action is Action.WAIT and hop.state is HopState.FAILED
        ):
            self._store.reopen_hop(run_id, hop_index)
            self._clocks.restart(run_id, hop_index, hop.site_id)
            if decision.action is Action.RETRY:  # a wait offers it on the site's return
                self._assignments.reoffer(run_id, hop_index)
        elif decision.action in (Action.SKIP, Action.REROUTE):
            self._drop(run, plan, hop, reroute=decision.action is Action.REROUTE)
        return decision

    def end_failed(self, run_id: str, failure: str) -> None:
        """Fails a running run (inside a transaction); its open hops die with it."""
        self._store.update_run(run_id, state=RunState.FAILED, error=failure)
        self._journal.event(run_id, EventKind.RUN_FAILED, message=failure)

    def _facts(self, run: RunRecord, hop: HopRecord) -> FaultFacts:
        events = self._store.list_events(run.run_id)
        faults = [e for e in events if e.kind is EventKind.FAULT]
        previous = self._store.get_hop(run.run_id, hop.hop_index - 1) if hop.hop_index else None
        return FaultFacts(
            hop_index=hop.hop_index,
            site_id=hop.site_id,
            retries=sum(
                1
                for e in faults
                if "retry" in e.metrics and (e.hop_index, e.site_id) == (hop.hop_index, hop.site_id)
            ),
            skipped_this_cycle=sum(
                1
                for e in faults
                if e.metrics.get("cycle") == hop.cycle and {"skip", "reroute"} & set(e.metrics)
            ),
            sites_remaining=sum(1 for s in run.sites if s != hop.site_id and self.alive(s)),
            resealing=hop.output is not None,
            previous_site=previous.site_id if previous else "",
            previous_alive=previous is None or self.alive(previous.site_id),
        )

    def _drop(self, run: RunRecord, plan: RunPlan, hop: HopRecord, *, reroute: bool) -> None:
        """Plans the hops after ``hop`` one place earlier (the next of its cycle, or under
        reroute the strategy's first live pick among the cycle's unvisited sites, takes
        its place) and has the previous site re-seal for it."""
        k = hop.hop_index
        rest = self._store.list_hops(run.run_id)[k + 1 :]
        same = [h.site_id for h in rest if h.cycle == hop.cycle]
        if reroute and same:
            live = [s for s in same if self.alive(s)] or same
            ranked = strategy_order(self._store, run, plan, hop.cycle)
            pick = next(s for s in ranked if s in live)
            same = [pick, *(s for s in same if s != pick)]
        pairs = [(hop.cycle, s) for s in same] + [(h.cycle, h.site_id) for h in rest[len(same) :]]
        self._store.replan_hops(
            run.run_id,
            k,
            [
                HopRecord(run_id=run.run_id, hop_index=k + i, cycle=c, site_id=s)
                for i, (c, s) in enumerate(pairs)
            ],
            total_hops=run.total_hops - 1,
        )
        recipient = same[0] if same else "the next cycle or the study owner"
        if k == 0:
            self._advance(run.run_id)
            return
        prev = self._store.reopen_hop(run.run_id, k - 1)
        self._clocks.restart(run.run_id, k - 1, prev.site_id)
        self._assignments.reoffer(run.run_id, k - 1)
        self._journal.event(
            run.run_id,
            EventKind.FAULT,
            hop_index=k - 1,
            site_id=prev.site_id,
            message=f"reseal: hop {k - 1} at {prev.site_id} seals its output again for {recipient}",
        )

    def _last_seen(self, site_id: str) -> str:
        site = next((s for s in self._store.list_sites() if s.site_id == site_id), None)
        if site is None or not site.last_seen_ms:
            return "never"
        when = datetime.fromtimestamp(site.last_seen_ms / 1000, tz=UTC)
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")
