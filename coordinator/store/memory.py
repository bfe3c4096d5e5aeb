"""An in-memory ``Store`` for unit tests: the same contract as SQLite, no durability."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from baton.errors import ConflictError, NotFoundError, StoreError
from coordinator.store.base import (
    EventKind,
    EventRecord,
    HopRecord,
    HopState,
    PendingAudit,
    RunRecord,
    RunState,
    SiteRecord,
)
from coordinator.store.rules import (
    as_floats,
    check_hop_transition,
    check_new_hops,
    check_reopen,
    check_replan,
    check_run_update,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from baton.domain import BlobRef


class MemoryStore:
    """``Store`` held in dictionaries behind one lock.

    Constraints: the contract of ``coordinator.store.base.Store``. In addition, and
    identically in ``SqliteStore``:
    - ``update_run`` MUST be given a terminal state (moving to RUNNING is a ``ConflictError``).
    - ``add_hops`` MUST be given PENDING hops of the same run (else ``ConflictError``).
    - ``assigned_hops_for_site`` on an unregistered site raises ``NotFoundError``.
    - ``list_runs`` sorts by ``created_ms`` descending, then ``run_id`` ascending.
    - Metric values are stored as ``float``.
    - After ``close()`` every method raises ``StoreError``; ``close()`` is idempotent.

    Records are copied on the way in and on the way out, so neither the caller's later
    changes nor the store's reach a record already handed over.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._closed = False
        self._sites: dict[str, SiteRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        self._hops: dict[str, list[HopRecord]] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._outbox: dict[int, PendingAudit] = {}
        self._next_outbox = 1

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Holds the lock for the block; restores every table if the block raises."""
        with self._lock:
            saved = (
                dict(self._sites),
                dict(self._runs),
                {k: list(v) for k, v in self._hops.items()},
                {k: list(v) for k, v in self._events.items()},
                dict(self._outbox),
                self._next_outbox,
            )
            try:
                yield
            except BaseException:
                self._sites, self._runs, self._hops, self._events = saved[:4]
                self._outbox, self._next_outbox = saved[4], saved[5]
                raise

    def queue_audit(self, entry: PendingAudit) -> int:
        """Stores an audit entry for the signed log; returns its ``outbox_id``."""
        with self._lock:
            self._check_open()
            outbox_id = self._next_outbox
            self._next_outbox += 1
            self._outbox[outbox_id] = replace(entry, outbox_id=outbox_id, detail=dict(entry.detail))
            return outbox_id

    def pending_audit(self) -> list[PendingAudit]:
        """Audit entries queued and not yet cleared, oldest first."""
        with self._lock:
            self._check_open()
            return [
                replace(self._outbox[k], detail=dict(self._outbox[k].detail))
                for k in sorted(self._outbox)
            ]

    def clear_audit(self, outbox_id: int) -> None:
        """Forgets a queued audit entry; unknown ids are ignored."""
        with self._lock:
            self._check_open()
            self._outbox.pop(outbox_id, None)

    # -- sites ------------------------------------------------------------------------

    def upsert_site(self, site: SiteRecord) -> None:
        """Inserts or replaces a site's registration."""
        with self._lock:
            self._check_open()
            self._sites[site.site_id] = _copy_site(site)

    def touch_sites(self, seen: dict[str, int]) -> None:
        """Records heartbeats (site id: ``last_seen_ms``, never moved back) in one
        transaction; sites never registered are skipped."""
        with self._lock:
            self._check_open()
            for site_id, ms in seen.items():
                if (site := self._sites.get(site_id)) is not None:
                    last = max(site.last_seen_ms, ms)
                    self._sites[site_id] = replace(site, last_seen_ms=last)

    def get_site(self, site_id: str) -> SiteRecord:
        """Returns one site."""
        with self._lock:
            return _copy_site(self._site(site_id))

    def list_sites(self) -> list[SiteRecord]:
        """Returns every site, ordered by id."""
        with self._lock:
            self._check_open()
            return [_copy_site(self._sites[k]) for k in sorted(self._sites)]

    # -- runs -------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Records a new run."""
        with self._lock:
            self._check_open()
            if run.run_id in self._runs:
                raise ConflictError(f"run {run.run_id!r} already exists", run_id=run.run_id)
            self._runs[run.run_id] = replace(run, sites=tuple(run.sites), state=RunState(run.state))
            self._hops[run.run_id] = []
            self._events[run.run_id] = []

    def get_run(self, run_id: str) -> RunRecord:
        """Returns one run."""
        with self._lock:
            return self._run(run_id)

    def list_runs(self) -> list[RunRecord]:
        """Returns every run, newest first (``created_ms`` descending, then id ascending)."""
        with self._lock:
            self._check_open()
            by_id = sorted(self._runs.values(), key=lambda r: r.run_id)
            return sorted(by_id, key=lambda r: r.created_ms, reverse=True)

    def update_run(
        self,
        run_id: str,
        *,
        state: RunState,
        error: str = "",
        result: BlobRef | None = None,
    ) -> RunRecord:
        """Moves a RUNNING run to the terminal ``state``; returns the updated record."""
        with self._lock:
            run = self._run(run_id)
            check_run_update(run, state)
            updated = replace(run, state=state, error=error, result=result)
            self._runs[run_id] = updated
            return updated

    # -- hops -------------------------------------------------------------------------

    def add_hops(self, run_id: str, hops: list[HopRecord]) -> None:
        """Appends planned hops (PENDING) to a run, at contiguous indices."""
        with self._lock:
            self._run(run_id)
            stored = self._hops[run_id]
            check_new_hops(run_id, len(stored), hops)
            stored.extend(replace(_copy_hop(h), state=HopState.PENDING) for h in hops)

    def get_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """Returns one hop."""
        with self._lock:
            return _copy_hop(self._hop(run_id, hop_index))

    def list_hops(self, run_id: str) -> list[HopRecord]:
        """Returns a run's hops by index."""
        with self._lock:
            self._run(run_id)
            return [_copy_hop(h) for h in self._hops[run_id]]

    def assign_hop(self, run_id: str, hop_index: int, *, input: BlobRef | None) -> HopRecord:
        """PENDING -> ASSIGNED, recording the input blob."""
        with self._lock:
            hop = self._hop(run_id, hop_index)
            check_hop_transition(hop, HopState.ASSIGNED)
            return self._put_hop(replace(hop, state=HopState.ASSIGNED, input=input))

    def complete_hop(
        self,
        run_id: str,
        hop_index: int,
        *,
        output: BlobRef,
        metrics_before: dict[str, float],
        metrics_after: dict[str, float],
        num_examples: int,
        train_seconds: float,
        output_manifest: bytes = b"",
    ) -> HopRecord:
        """ASSIGNED -> COMPLETED with the hop's output, its manifest and metrics."""
        with self._lock:
            hop = self._hop(run_id, hop_index)
            check_hop_transition(hop, HopState.COMPLETED)
            return self._put_hop(
                replace(
                    hop,
                    state=HopState.COMPLETED,
                    output=output,
                    metrics_before=as_floats(metrics_before),
                    metrics_after=as_floats(metrics_after),
                    num_examples=num_examples,
                    train_seconds=float(train_seconds),
                    output_manifest=bytes(output_manifest),
                )
            )

    def fail_hop(self, run_id: str, hop_index: int, *, error: str) -> HopRecord:
        """PENDING or ASSIGNED -> FAILED."""
        with self._lock:
            hop = self._hop(run_id, hop_index)
            check_hop_transition(hop, HopState.FAILED)
            return self._put_hop(replace(hop, state=HopState.FAILED, error=error))

    def reopen_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """ASSIGNED|COMPLETED|FAILED -> ASSIGNED, keeping input and output."""
        with self._lock:
            hop = self._hop(run_id, hop_index)
            check_reopen(hop)
            return self._put_hop(replace(hop, state=HopState.ASSIGNED, error=""))

    def replan_hops(
        self, run_id: str, from_index: int, hops: list[HopRecord], *, total_hops: int
    ) -> None:
        """Replaces the hops from ``from_index`` on and sets ``total_hops``."""
        with self._lock:
            run = self._run(run_id)
            stored = self._hops[run_id]
            check_replan(run_id, from_index, stored[from_index:], hops)
            del stored[from_index:]
            stored.extend(replace(_copy_hop(h), state=HopState.PENDING) for h in hops)
            self._runs[run_id] = replace(run, total_hops=total_hops)

    def assigned_hops_for_site(self, site_id: str) -> list[HopRecord]:
        """ASSIGNED hops of RUNNING runs for one site, oldest run first, then by index."""
        with self._lock:
            self._site(site_id)
            runs = sorted(
                (r for r in self._runs.values() if r.state is RunState.RUNNING),
                key=lambda r: (r.created_ms, r.run_id),
            )
            return [
                _copy_hop(h)
                for r in runs
                for h in self._hops[r.run_id]
                if h.site_id == site_id and h.state is HopState.ASSIGNED
            ]

    # -- events -----------------------------------------------------------------------

    def append_event(
        self,
        run_id: str,
        kind: EventKind,
        *,
        time_ms: int,
        hop_index: int = 0,
        site_id: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> EventRecord:
        """Appends an event with the run's next sequence number (1, 2, 3, ...)."""
        with self._lock:
            self._run(run_id)
            events = self._events[run_id]
            event = EventRecord(
                run_id=run_id,
                seq=len(events) + 1,
                kind=EventKind(kind),
                time_ms=time_ms,
                hop_index=hop_index,
                site_id=site_id,
                message=message,
                metrics=as_floats(metrics or {}),
            )
            events.append(event)
            return _copy_event(event)

    def list_events(self, run_id: str, *, after_seq: int = 0) -> list[EventRecord]:
        """Returns a run's events with ``seq > after_seq``, in order."""
        with self._lock:
            self._run(run_id)
            return [_copy_event(e) for e in self._events[run_id][max(after_seq, 0) :]]

    def close(self) -> None:
        """Drops all state; every later call raises ``StoreError``."""
        with self._lock:
            self._closed = True
            self._sites.clear()
            self._runs.clear()
            self._hops.clear()
            self._events.clear()

    # -- internals (call with the lock held) ---------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the memory store is closed")

    def _site(self, site_id: str) -> SiteRecord:
        self._check_open()
        try:
            return self._sites[site_id]
        except KeyError:
            raise NotFoundError(f"unknown site {site_id!r}", site_id=site_id) from None

    def _run(self, run_id: str) -> RunRecord:
        self._check_open()
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFoundError(f"unknown run {run_id!r}", run_id=run_id) from None

    def _hop(self, run_id: str, hop_index: int) -> HopRecord:
        self._run(run_id)
        hops = self._hops[run_id]
        if not 0 <= hop_index < len(hops):
            raise NotFoundError(
                f"run {run_id!r} has no hop {hop_index}", run_id=run_id, hop=hop_index
            )
        return hops[hop_index]

    def _put_hop(self, hop: HopRecord) -> HopRecord:
        self._hops[hop.run_id][hop.hop_index] = hop
        return _copy_hop(hop)


def _copy_site(site: SiteRecord) -> SiteRecord:
    caps = replace(site.capabilities, devices=tuple(site.capabilities.devices))
    profile = replace(site.profile, label_histogram=tuple(site.profile.label_histogram))
    return replace(site, capabilities=caps, profile=profile)


def _copy_hop(hop: HopRecord) -> HopRecord:
    return replace(
        hop,
        metrics_before=as_floats(hop.metrics_before),
        metrics_after=as_floats(hop.metrics_after),
    )


def _copy_event(event: EventRecord) -> EventRecord:
    return replace(event, metrics=dict(event.metrics))
