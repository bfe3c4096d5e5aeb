"""Carries out the ``[faults]`` policy of a run: gathers the facts about a lost site or a
failed hop, asks :func:`coordinator.engine.faults.decide`, records the decision as an
event and an audit entry, and changes the hops accordingly.

Skip and reroute lose one hop and no model: the hops after the lost one are planned
again one place earlier, and the site of the last completed hop is offered that hop
again, to re-seal its kept output for the new recipient (its second CompleteHop replaces
the output and manifest); only then does the chain go on (see docs/security.md). A hop
whose input (the coordinator's copy of the hop before) is missing or fails its hash is
handled the same way without losing a hop: its sender seals the output again for it
(:meth:`Recovery.reseal_input`). A planned hop whose site holds a revoked certificate
(``Fault.REVOKED``) is met by ``on_lost_site`` before the hop before it is sent: skip and
reroute replace the recipient of the hop before, which is then offered with the new one.

Hop and cycle numbers in messages count from 1; ``hop_index`` fields stay 0-based.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from baton.plan import RunPlan, parse_plan
from coordinator.blobs import BlobStore
from coordinator.engine.assignments import Assignments
from coordinator.engine.clocks import HopClocks
from coordinator.engine.copies import copy_problem
from coordinator.engine.faults import Action, Decision, Fault, FaultFacts, decide, escrow_hint
from coordinator.engine.journal import Journal
from coordinator.engine.planning import strategy_order
from coordinator.store.base import EventKind, HopRecord, HopState, RunRecord, RunState, Store

logger = logging.getLogger(__name__)

MAX_RESEALS = 3
"""Most times one hop's output is sealed again because the coordinator's copy of it was
lost; one more fails the run (the blob store is failing, not a site)."""


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
        blobs: The blob store, to find the newest hop the owner's escrow opens.
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
        blobs: BlobStore | None = None,
    ) -> None:
        self._blobs = blobs
        self._store = store
        self._journal = journal
        self._assignments = assignments
        self._clocks = clocks
        self.lease_ms = int(lease_seconds * 1000)
        self._revoked = revoked
        self._advance = advance
        self.heard: Callable[[str], int] = lambda site_id: 0
        """A site's heartbeat not yet in the store (Unix ms; set by the server)."""

    def alive(self, site_id: str) -> bool:
        """Whether ``site_id`` is registered, its lease live and its certificates not revoked."""
        site = next((s for s in self._store.list_sites() if s.site_id == site_id), None)
        seen = max(site.last_seen_ms, self.heard(site_id)) if site else 0
        if site is None or self._journal.clock() - seen > self.lease_ms:
            return False
        return not self.revoked(site_id)

    def revoked(self, site_id: str) -> bool:
        """Whether registered ``site_id`` holds a revoked certificate (TLS, signing or
        encryption); False for a site never registered."""
        site = next((s for s in self._store.list_sites() if s.site_id == site_id), None)
        if site is None:
            return False
        return self._any_revoked(
            site.certificate_pem, site.signing_certificate_pem, site.encryption_certificate_pem
        )

    def owner_revoked(self, run: RunRecord) -> bool:
        """Whether the study owner of ``run`` holds a revoked certificate."""
        return self._any_revoked(
            run.owner_signing_certificate_pem, run.owner_encryption_certificate_pem
        )

    def fail_revoked_owner(self, run_id: str, hop_index: int) -> None:
        """Fails running ``run_id``, whose last hop ``hop_index`` (assigned) cannot be sealed
        to its study owner, who holds a revoked certificate; no policy replaces the owner.
        Inside the caller's transaction; does nothing if the run or hop moved on."""
        run = self._store.get_run(run_id)
        hop = self._store.get_hop(run_id, hop_index)
        if run.state is not RunState.RUNNING or hop.state is not HopState.ASSIGNED:
            return
        reason = (
            f"hop {hop_index + 1} at {hop.site_id} cannot be sealed to the study owner, "
            "who holds a revoked certificate"
        )
        self._journal.record(
            "fault_decided",
            run_id,
            hop=hop_index,
            detail={"site": hop.site_id, "fault": "owner_revoked", "action": "abort"},
        )
        logger.warning("run %s: abort: %s", run_id, reason)
        self._store.fail_hop(run_id, hop_index, error=reason)
        self.end_failed(run_id, reason)

    def _any_revoked(self, *pems: str) -> bool:
        return any(pem and self._revoked(pem.encode()) for pem in pems)

    def handle(
        self, run_id: str, hop_index: int, fault: Fault, detail: str = "", *, site_id: str = ""
    ) -> Decision | None:
        """Decides what to do with hop ``hop_index`` (lost or failed) and does it.

        A lost hop found outside the transaction (``site_id`` its site then) is left alone,
        returning None, if it moved on meanwhile: completed, or offered to another site; so
        is a revoked one (``Fault.REVOKED``: a pending hop after an assigned one) that is no
        longer pending after an assigned hop, or whose site is no longer revoked.
        """
        run = self._store.get_run(run_id)
        plan = parse_plan(run.plan_toml, source="run plan")
        hop = self._store.get_hop(run_id, hop_index)
        moved = run.state is not RunState.RUNNING or bool(site_id and hop.site_id != site_id)
        if fault is Fault.LOST and (moved or hop.state is not HopState.ASSIGNED):
            return None
        if fault is Fault.REVOKED and (
            moved
            or hop.state is not HopState.PENDING
            or not hop_index
            or self._store.get_hop(run_id, hop_index - 1).state is not HopState.ASSIGNED
            or not self.revoked(hop.site_id)
        ):
            return None
        decision = decide(plan.faults, fault, self._facts(run, plan, hop))
        message = decision.reason + (f": {detail}" if detail else "")
        if decision.action is Action.WAIT and fault is Fault.LOST:
            message = f"site {hop.site_id} offline since {self._last_seen(hop.site_id)}; {message}"
        self._journal.event(
            run_id,
            EventKind.FAULT,
            hop_index=hop_index,
            site_id=hop.site_id,
            message=f"{decision.action.value}: {message}",
            metrics={"cycle": float(hop.cycle), decision.action.value: 1.0},  # 0-based
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

    def reseal_input(self, run_id: str, hop_index: int, problem: str) -> Decision:
        """The coordinator's copy of hop ``hop_index``'s input (the output of the hop
        before) ``problem`` (e.g. "fails its SHA-256 check"): has the site of the hop before
        seal its kept output again, for the same recipient, and offers hop ``hop_index``
        again once that completes; no hop is lost. Inside the caller's transaction.

        The run fails instead, with a reason naming the hop, when that site is gone too
        (the coordinator cannot seal a model: it never holds one), saying which escrowed
        hop the study owner can restart from when the plan asks for escrow; or after
        :data:`MAX_RESEALS` re-seals of one hop.
        """
        run = self._store.get_run(run_id)
        plan = parse_plan(run.plan_toml, source="run plan")
        hops = self._store.list_hops(run_id)
        hop, prev = hops[hop_index], hops[hop_index - 1]
        what = (
            f"the coordinator's copy of hop {hop_index} (its output, sealed by {prev.site_id} "
            f"for hop {hop_index + 1} at {hop.site_id}) {problem}"
        )
        resealed = sum(
            1
            for e in self._store.list_events(run_id)
            if e.kind is EventKind.FAULT and e.hop_index == prev.hop_index and "reseal" in e.metrics
        )
        if not self.alive(prev.site_id):
            escrow = self._escrow_hop(run, plan, hop_index - 2)
            decision = Decision(
                action=Action.ABORT,
                reason=f"{what}, and {prev.site_id} is gone too: nobody can seal it again"
                + escrow_hint(escrow, run_id),
            )
        elif resealed >= MAX_RESEALS:
            decision = Decision(
                action=Action.ABORT,
                reason=f"{what} after {resealed} re-seals: check the coordinator's blob store",
            )
        else:
            decision = Decision(
                action=Action.RETRY,
                reason=f"{what}; {prev.site_id} seals it again for {hop.site_id}",
            )
        self._journal.event(
            run_id,
            EventKind.FAULT,
            hop_index=prev.hop_index,
            site_id=prev.site_id,
            message=("abort: " if decision.action is Action.ABORT else "reseal: ")
            + decision.reason,
            metrics={"cycle": float(prev.cycle), "reseal": 1.0},
        )
        self._journal.record(
            "fault_decided",
            run_id,
            hop=prev.hop_index,
            detail={"site": prev.site_id, "fault": "copy_lost", "action": decision.action.value},
        )
        logger.warning("run %s: %s", run_id, decision.reason)
        if decision.action is Action.ABORT:
            if hop.state in (HopState.PENDING, HopState.ASSIGNED):
                self._store.fail_hop(run_id, hop_index, error=decision.reason)
            self.end_failed(run_id, decision.reason)
            return decision
        # The hop and those after it wait (PENDING) for the new copy, on the same sites.
        self._store.replan_hops(
            run_id,
            hop_index,
            [
                HopRecord(run_id=run_id, hop_index=h.hop_index, cycle=h.cycle, site_id=h.site_id)
                for h in hops[hop_index:]
            ],
            total_hops=run.total_hops,
        )
        self._store.reopen_hop(run_id, prev.hop_index)
        self._clocks.restart(run_id, prev.hop_index, prev.site_id)
        self._assignments.reoffer(run_id, prev.hop_index)
        self._assignments.reoffer(run_id, hop_index)  # sent again once assigned again
        return decision

    def end_failed(self, run_id: str, failure: str) -> None:
        """Fails a running run (inside a transaction); its open hops die with it."""
        self._store.update_run(run_id, state=RunState.FAILED, error=failure)
        self._journal.event(run_id, EventKind.RUN_FAILED, message=failure)

    def _facts(self, run: RunRecord, plan: RunPlan, hop: HopRecord) -> FaultFacts:
        events = self._store.list_events(run.run_id)
        faults = [e for e in events if e.kind is EventKind.FAULT]
        previous = self._store.get_hop(run.run_id, hop.hop_index - 1) if hop.hop_index else None
        # An assigned previous hop seals for whoever comes next anyway: nothing to re-seal.
        alive = (
            previous is None or previous.state is HopState.ASSIGNED or self.alive(previous.site_id)
        )
        return FaultFacts(
            hop_index=hop.hop_index,
            site_id=hop.site_id,
            run_id=run.run_id,
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
            previous_alive=alive,
            escrow_hop=-1 if alive else self._escrow_hop(run, plan, hop.hop_index - 1),
        )

    def _escrow_hop(self, run: RunRecord, plan: RunPlan, newest: int) -> int:
        """The newest completed hop up to ``newest`` whose stored output is intact, when the
        plan seals every hop to the study owner too (escrow); else -1. Reads blobs."""
        if not plan.security.escrow_to_owner or self._blobs is None:
            return -1
        hops = self._store.list_hops(run.run_id)[: max(newest + 1, 0)]
        for h in reversed(hops):
            if h.output is not None and copy_problem(self._blobs, h.output) is None:
                return h.hop_index
        return -1

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
        if prev.output is None:
            return  # not sealed yet: offered again, naming its new recipient
        self._journal.event(
            run.run_id,
            EventKind.FAULT,
            hop_index=k - 1,
            site_id=prev.site_id,
            message=f"reseal: hop {k} at {prev.site_id} seals its output again for {recipient}",
        )

    def _last_seen(self, site_id: str) -> str:
        site = next((s for s in self._store.list_sites() if s.site_id == site_id), None)
        if site is None or not site.last_seen_ms:
            return "never"
        when = datetime.fromtimestamp(site.last_seen_ms / 1000, tz=UTC)
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")
