"""Leases and hop deadlines: finds the hops whose site is lost and hands them to the
run's fault policy.

A hop is lost when its site's lease expired (no heartbeat for ``lease_seconds``, counted
from the hop's assignment at the earliest), or when it missed the deadline of its phase:
picked up (input downloaded or first progress) within ``pickup_seconds`` of its
assignment, heard from (a progress report or a download) every ``progress_seconds``
while it trains, and its upload finished within ``upload_seconds``. Phases live in
memory: after a restart every hop's clock starts again.

The same pass finds the recipients nobody may seal to: the planned site of the hop after
an assigned one holding a revoked certificate (its fault policy is applied once; under
``wait`` one warning per revocation), and a revoked study owner of a run's last hop
(the run fails). It also counts the sites' leases that expire, for the metrics.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from baton.errors import BatonError, NotFoundError, StoreError
from coordinator.engine.clocks import HopClock, HopClocks, Phase
from coordinator.engine.faults import Action, Fault
from coordinator.engine.journal import Journal
from coordinator.engine.recovery import Recovery
from coordinator.store.base import HopRecord, HopState, RunRecord, RunState, Store

logger = logging.getLogger(__name__)

_LEASE = "(lease expired)"


class Leases(Protocol):
    """Where the sites' last heartbeats are kept (:class:`~coordinator.engine.sites.Sites`)."""

    def last_seen(self) -> dict[str, int]:
        """Each site's last heartbeat (Unix ms), written to the store or not yet."""
        ...

    def flush(self) -> int:
        """Writes the heartbeats not yet in the store; returns how many."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Deadlines:
    """Seconds each phase of a hop may last without a sign of life."""

    pickup_seconds: float = 600.0
    progress_seconds: float = 300.0
    upload_seconds: float = 1800.0

    def of(self, phase: Phase) -> float:
        """The deadline of ``phase``, in seconds."""
        return {
            Phase.PICKUP: self.pickup_seconds,
            Phase.TRAINING: self.progress_seconds,
            Phase.UPLOAD: self.upload_seconds,
        }[phase]


class HopWatch:
    """Checks every hop in flight against the leases and deadlines, from its own thread.

    Args:
        store: Durable state.
        journal: Transactions and the clock.
        recovery: Applies the run's fault policy to a lost hop.
        clocks: The hops' phases.
        deadlines: Per-phase deadlines.
        interval_seconds: Time between two checks.
        leases: The sites' last heartbeats, flushed to the store before every check;
            without it, ``last_seen_ms`` of the stored sites.
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        recovery: Recovery,
        clocks: HopClocks,
        *,
        deadlines: Deadlines,
        interval_seconds: float,
        leases: Leases | None = None,
    ) -> None:
        self._store = store
        self._leases = leases
        self._journal = journal
        self._recovery = recovery
        self._clocks = clocks
        self._deadlines = deadlines
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: set[tuple[str, int, str]] = set()
        """Revoked recipients (run id, hop index, site) already warned about under wait."""
        self._live: set[str] = set()
        """Sites whose lease was live at the last check."""
        self._expiries = 0
        self._expiries_lock = threading.Lock()

    def expiries(self) -> int:
        """Leases that expired while this process ran: a site seen live at one check and
        without a heartbeat for the lease at a later one counts once per absence (a site
        already silent at start-up does not count)."""
        with self._expiries_lock:
            return self._expiries

    def check(self) -> int:
        """One pass over the hops in flight; returns how many were found lost. Reads the
        running runs only (:meth:`Journal.running`), never the finished ones."""
        lost = 0
        if self._leases is not None:
            self._leases.flush()
            seen = self._leases.last_seen()
        else:
            seen = {s.site_id: s.last_seen_ms for s in self._store.list_sites()}
        now = self._journal.clock()
        self._count_expiries(seen, now)
        for run_id in self._journal.running():  # never the finished runs
            try:
                run = self._store.get_run(run_id)
            except NotFoundError:
                run = None
            if run is None or run.state is not RunState.RUNNING:
                self._journal.forget(run_id)
                continue
            hops = self._store.list_hops(run.run_id)
            for hop in hops:
                if hop.state is not HopState.ASSIGNED:
                    continue
                if self._recipient_revoked(run, hops, hop.hop_index):
                    break  # its hops changed: read again on the next pass
                clock = self._clocks.get(run.run_id, hop.hop_index, hop.site_id)
                last_seen = seen.get(hop.site_id, 0)
                why = self._why_lost(clock, last_seen, now)
                if why is None or clock.waited_seen_ms == last_seen:
                    continue
                lost += 1
                try:
                    with self._journal.transaction():
                        decision = self._recovery.handle(
                            run.run_id, hop.hop_index, Fault.LOST, why, site_id=hop.site_id
                        )
                except StoreError:
                    raise
                except BatonError as exc:
                    logger.error("run %s: cannot handle lost hop: %s", run.run_id, exc.message)
                    continue
                if decision is None:
                    continue
                if decision.action is Action.WAIT and why.endswith(_LEASE):
                    clock.waited_seen_ms = last_seen  # one warning per absence
                elif decision.action is Action.WAIT:
                    self._clocks.restart(run.run_id, hop.hop_index)  # warn again a deadline on
        return lost

    def _recipient_revoked(self, run: RunRecord, hops: list[HopRecord], index: int) -> bool:
        """Applies the fault policy when assigned hop ``index`` cannot be sealed to its
        recipient, who holds a revoked certificate; whether the run's hops changed."""
        nxt, recovery = index + 1, self._recovery
        owner = nxt == run.total_hops and recovery.owner_revoked(run)
        key = (run.run_id, nxt, hops[nxt].site_id if nxt < len(hops) else "")
        if not owner and (nxt >= min(len(hops), run.total_hops) or not recovery.revoked(key[2])):
            self._held.discard(key)  # certified again: a new revocation warns again
            return False
        if key in self._held:
            return False
        try:
            with self._journal.transaction():
                if owner:
                    recovery.fail_revoked_owner(run.run_id, index)
                    return True
                decision = recovery.handle(run.run_id, nxt, Fault.REVOKED, site_id=key[2])
        except StoreError:
            raise
        except BatonError as exc:
            logger.error("run %s: cannot replace a revoked recipient: %s", run.run_id, exc.message)
            return False
        if decision is not None and decision.action is Action.WAIT:
            self._held.add(key)  # one warning per revocation
            return False
        return decision is not None

    def _count_expiries(self, seen: dict[str, int], now: int) -> None:
        with self._expiries_lock:
            for site_id, last_seen in seen.items():
                if now - last_seen <= self._recovery.lease_ms:
                    self._live.add(site_id)
                elif site_id in self._live:
                    self._live.discard(site_id)
                    self._expiries += 1
                    logger.info("site %s: no heartbeat for the lease; it is offline", site_id)

    def _why_lost(self, clock: HopClock, last_seen_ms: int, now: int) -> str | None:
        if now - max(last_seen_ms, clock.since_ms) > self._recovery.lease_ms:
            return f"no heartbeat for {self._recovery.lease_ms / 1000:g} s {_LEASE}"
        limit = self._deadlines.of(clock.phase)
        if now - clock.since_ms > limit * 1000:
            return f"no sign of the hop for {limit:g} s ({clock.phase.value} deadline)"
        return None

    def start(self) -> None:
        """Starts checking every ``interval_seconds``."""
        self._thread = threading.Thread(target=self._loop, name="hop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops checking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except BatonError as exc:
                logger.error("hop watch: %s", exc.message)
