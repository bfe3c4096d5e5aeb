"""Periodic verification of stored blobs: the copies running runs hold are hashed again at
a bounded rate, and a corrupt input is sealed again before its recipient downloads it (a
corrupt start model, which only the study owner can seal, fails its run instead)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from baton.domain import BlobRef
from coordinator.blobs import BlobStore
from coordinator.engine.clocks import Phase
from coordinator.engine.copies import copy_problem
from coordinator.engine.runs import Scheduler
from coordinator.store.base import HopState, RunState, Store

logger = logging.getLogger(__name__)

BYTES_PER_SECOND = 32 << 20
"""How fast a sweep reads the blob store at most (a background task, never a burst)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepReport:
    """What one sweep found."""

    checked: int
    """Stored copies hashed."""
    bytes_read: int
    corrupt: int
    """Copies missing, of the wrong length, or failing their SHA-256."""
    resealed: int
    """Of those, inputs not yet picked up whose sender was asked to seal them again."""


class _Pace:
    """Sleeps so that reading stays under ``rate`` bytes per second on average."""

    def __init__(self, rate: int, stopping: threading.Event) -> None:
        self._rate, self._stopping = rate, stopping
        self._start = time.monotonic()
        self.bytes = 0

    def __call__(self, n: int) -> None:
        self.bytes += n
        ahead = self.bytes / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            self._stopping.wait(ahead)


class BlobVerifier:
    """Hashes again, every ``interval_seconds`` in a daemon thread, each blob a running
    run's hops name (inputs and outputs), reading at most ``bytes_per_second``.

    A copy that is missing or fails its hash is logged (ERROR) and audited
    (``blob_corrupt``). When it is the input of a hop whose site has not picked it up yet,
    the hop's sender seals its kept output again (:meth:`Recovery.reseal_input`, the path
    a failed download takes), so the recipient never downloads the bad copy. A run's start
    model is checked too; a corrupt one fails its run while its first hop has not picked it
    up (nobody but the study owner can seal it again). Other copies
    (a completed hop's input, an older output) are only reported: nobody downloads them
    unless a fault re-plans the run, and that download checks the copy again.

    Args:
        store: Coordinator state.
        blobs: The blob store.
        scheduler: Its journal, clocks and recovery act on a corrupt input.
        interval_seconds: Time between sweeps (the first starts after one interval).
        bytes_per_second: Reading rate bound.
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        scheduler: Scheduler,
        *,
        interval_seconds: float,
        bytes_per_second: int = BYTES_PER_SECOND,
    ) -> None:
        self._store, self._blobs, self._scheduler = store, blobs, scheduler
        self._interval, self._rate = interval_seconds, bytes_per_second
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blob-verify", daemon=True)

    def start(self) -> None:
        """Starts the thread (nothing when the interval is 0)."""
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stops the thread, cutting a sweep in progress short."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def sweep(self) -> SweepReport:
        """Verifies every blob of every running run once; acts on the corrupt ones."""
        pace = _Pace(self._rate, self._stopping)
        checked = corrupt = resealed = 0
        for run_id in self._scheduler.journal.running():
            for ref, made_by, input_of in _copies(self._store, run_id):
                if self._stopping.is_set():
                    break
                problem = copy_problem(self._blobs, ref, pace=pace)
                checked += 1
                if problem is not None:
                    corrupt += 1
                    resealed += self._report(run_id, made_by, ref, problem, input_of)
            start = self._store.get_run(run_id).start_model
            if start is not None and not self._stopping.is_set():
                problem = copy_problem(self._blobs, start, pace=pace)
                checked += 1
                if problem is not None:
                    corrupt += 1
                    self._report_start(run_id, start, problem)
        return SweepReport(
            checked=checked, bytes_read=pace.bytes, corrupt=corrupt, resealed=resealed
        )

    def _report(
        self, run_id: str, hop_index: int, ref: BlobRef, problem: str, input_of: int | None
    ) -> int:
        """Logs and audits a corrupt copy; has it sealed again if it is the input of a hop
        not yet picked up (checked again under the journal's lock). Returns 1 if so."""
        shown = ref.blob_id[:12]
        logger.error("run %s: stored copy %s (hop %d) %s", run_id, shown, hop_index + 1, problem)
        journal, sched = self._scheduler.journal, self._scheduler
        with journal.transaction():
            journal.record(
                "blob_corrupt",
                run_id,
                hop=hop_index,
                detail={"blob": ref.blob_id, "problem": problem},
            )
            if input_of is None or not self._awaits_pickup(run_id, input_of, ref):
                return 0
            sched.recovery.reseal_input(run_id, input_of, problem)
        return 1

    def _report_start(self, run_id: str, ref: BlobRef, problem: str) -> None:
        """Logs and audits a corrupt copy of a run's start model. Only the study owner can
        seal it again, so a run whose first hop has not picked it up yet fails now, with
        a reason that says how to start it again; a hop that took it already goes on."""
        why = (
            f"the coordinator's copy of the start model {problem}: only the study owner can "
            "seal it again (submit the run again with `baton submit PLAN --start-from MODEL`)"
        )
        logger.error("run %s: %s", run_id, why)
        journal = self._scheduler.journal
        with journal.transaction():
            detail = {"blob": ref.blob_id, "problem": problem, "copy": "start model"}
            journal.record("blob_corrupt", run_id, hop=0, detail=detail)
            if not self._awaits_pickup(run_id, 0, None):  # hop 0 reads the run's start model
                return
            self._store.fail_hop(run_id, 0, error=why)
            self._scheduler.recovery.end_failed(run_id, why)

    def _awaits_pickup(self, run_id: str, hop_index: int, given: BlobRef | None) -> bool:
        """Whether the run still runs and hop ``hop_index`` still waits to pick up the input
        ``given`` (None: the run's start model) that nobody downloaded yet. Called under
        the journal's lock."""
        hop = self._store.get_hop(run_id, hop_index)
        return (
            self._store.get_run(run_id).state is RunState.RUNNING
            and hop.input == given
            and hop.state in (HopState.PENDING, HopState.ASSIGNED)
            and self._scheduler.clocks.get(run_id, hop_index, hop.site_id).phase is Phase.PICKUP
        )

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                report = self.sweep()
            except Exception:  # a failed sweep must not end the coordinator
                logger.exception("blob verification failed")
                continue
            logger.info(
                "blob verification: %d copies, %d bytes, %d corrupt, %d sealed again",
                report.checked,
                report.bytes_read,
                report.corrupt,
                report.resealed,
            )


def _copies(store: Store, run_id: str) -> list[tuple[BlobRef, int, int | None]]:
    """Each blob a run's hops name once: its reference, the hop whose output it is, and
    the hop whose input it is (None: an output no later hop has taken as input yet)."""
    hops = store.list_hops(run_id)
    copies: dict[str, tuple[BlobRef, int, int | None]] = {}
    for hop in hops:
        if hop.output is not None:
            copies.setdefault(hop.output.blob_id, (hop.output, hop.hop_index, None))
    for hop in hops:
        if hop.input is not None and hop.hop_index > 0:
            copies[hop.input.blob_id] = (hop.input, hop.hop_index - 1, hop.hop_index)
    return list(copies.values())
