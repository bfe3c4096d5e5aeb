"""Model transfers through the relay: resumable uploads of a hop's sealed output, and
downloads of a hop's input, of a finished run's final model, of its result, and of any
completed hop's output (for its owner); and a run's start model, as its owner sends it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from baton.domain import BlobRef
from baton.errors import BlobError, ConflictError, NotFoundError, TransportError
from coordinator.blobs import BlobStore
from coordinator.blobs_follow import follow
from coordinator.engine.clocks import Phase
from coordinator.engine.copies import copy_problem
from coordinator.engine.faults import Action
from coordinator.engine.runs import Scheduler
from coordinator.engine.start_model import StartModel
from coordinator.store.base import HopRecord, RunState, Store

Hold = Callable[[], AbstractContextManager[None]]
"""Holds a slot (of a capped kind of stream) while its block runs."""


def _held(hold: Hold, stream: Iterator[bytes]) -> Iterator[bytes]:
    """``stream``, produced while ``hold()`` holds its slot."""
    with hold():
        yield from stream


@dataclass(frozen=True, kw_only=True, slots=True)
class UploadHeader:
    """What an upload declares before its first chunk."""

    run_id: str
    hop_index: int
    """The hop whose output this is; the uploading site must hold it."""
    transfer_id: str
    """The site's name for this upload, 1-128 characters, to resume it by."""
    total_size: int
    sha256: str
    """Lower-case hex SHA-256 of the whole blob."""
    offset: int
    """Where this stream resumes: the bytes already committed."""
    manifest: bytes = b""
    """The signed manifest sealing the blob, when the site sent it before the blob (the
    caller verified it): kept while the blob arrives, for its recipient."""


class Transfers:
    """Streams blobs to and from the blob store for the parties allowed them.

    Args:
        store: Durable state.
        blobs: The blob store.
        scheduler: The run engine, which says which hop a site holds.
        max_blob_bytes: Largest blob a site may upload.
        stall_seconds: How long a download that follows an upload still arriving waits
            for more bytes before it ends with a retryable status.
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        scheduler: Scheduler,
        *,
        max_blob_bytes: int,
        stall_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._scheduler = scheduler
        self._max_blob_bytes = max_blob_bytes
        self._stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._arriving: dict[BlobRef, str] = {}
        """The blobs whose uploads have started, not yet stored or discarded: their keys."""
        self._announced: dict[tuple[str, int], tuple[BlobRef, bytes]] = {}
        """Per (run, hop) whose output is arriving: the blob and its signed manifest."""

    def upload(
        self, site_id: str, header: UploadHeader, chunks: Iterator[tuple[int, bytes]]
    ) -> BlobRef:
        """Appends ``chunks`` (offset, data) to the site's upload; stores the blob when the
        declared size is reached.

        Raises:
            NotFoundError, Denied, ConflictError: the site does not hold the hop.
            BlobError: too large, longer than declared, or not the declared hash.
            ConflictError: the upload resumes at the wrong offset, or ended early (what
                arrived is kept, to resume from).
        """
        self._hop(site_id, header.run_id, header.hop_index, early=False)
        self._scheduler.clocks.touch(header.run_id, header.hop_index, site_id, Phase.UPLOAD)
        if header.total_size > self._max_blob_bytes:
            raise BlobError(
                f"blob of {header.total_size} bytes exceeds the limit of {self._max_blob_bytes}"
            )
        key = transfer_key(site_id, header.transfer_id)
        committed = self._blobs.committed(key)
        if header.offset != committed:
            raise ConflictError(f"upload must resume at offset {committed}, not {header.offset}")
        declared = BlobRef(blob_id=header.sha256, size=header.total_size)
        with self._lock:
            self._arriving[declared] = key
            if header.manifest:
                self._announced[header.run_id, header.hop_index] = (declared, header.manifest)
        if header.manifest:  # its recipient may start (while cut-through is on)
            self._scheduler.cut_through.announce(
                header.run_id, header.hop_index, site_id, declared, header.manifest
            )
        try:
            for offset, data in chunks:
                if committed + len(data) > header.total_size:
                    self._blobs.abort(key)
                    raise BlobError("upload is longer than its declared size")
                committed = self._blobs.append(key, offset, data)
            if committed < header.total_size:
                # The stream ended early (a cut link, a cancelled call): keep what arrived,
                # so the upload resumes from here (its readers wait for it); finishing
                # would discard it as a size mismatch.
                raise ConflictError(
                    f"upload ended after {committed} of {header.total_size} bytes; "
                    f"resume at offset {committed}"
                )
            ref = self._blobs.finish(
                key, expected_sha256=header.sha256, expected_size=header.total_size
            )
        except BlobError:
            self._forget(header, declared, key)
            self._scheduler.cut_through.withdraw(header.run_id, header.hop_index, declared)
            raise
        self._forget(header, declared, key)
        return ref

    def store_start(
        self, admin: str, start: StartModel, chunks: Iterator[tuple[int, bytes]]
    ) -> None:
        """Stores the sealed start model ``admin`` sends with a run, streamed from offset 0
        in one call (a failed call keeps nothing: the owner sends it again).

        Raises:
            BlobError: over the blob size limit, chunks out of order, longer or shorter
                than declared, or not the declared hash.
        """
        size = start.blob.size
        if size > self._max_blob_bytes:
            raise BlobError(f"blob of {size} bytes exceeds the limit of {self._max_blob_bytes}")
        key = transfer_key(f"admin/{admin}", f"start-{start.run_id}")
        self._blobs.abort(key)
        committed = 0
        try:
            for offset, data in chunks:
                if offset != committed or committed + len(data) > size:
                    raise BlobError("the start model's chunks overlap, leave gaps or run long")
                committed = self._blobs.append(key, offset, data)
            if committed != size:
                raise BlobError(f"the start model ended after {committed} of {size} bytes")
            self._blobs.finish(key, expected_sha256=start.blob.blob_id, expected_size=size)
        except BaseException:
            self._blobs.abort(key)
            raise

    def _forget(self, header: UploadHeader, blob: BlobRef, key: str) -> None:
        """Ends the cut-through reads of ``blob`` through the upload ``key``."""
        with self._lock:
            if self._arriving.get(blob) == key:
                del self._arriving[blob]
            hop = (header.run_id, header.hop_index)
            if self._announced.get(hop, (None, b""))[0] == blob:
                del self._announced[hop]

    def announced(self, run_id: str, hop_index: int) -> tuple[BlobRef, bytes] | None:
        """The output of hop ``hop_index`` while it arrives, and the signed manifest its
        site sent (verified) before the first byte: what the next hop's site needs to
        start (:meth:`send` streams the blob as it arrives). None when the hop's output is
        not arriving or came without a manifest."""
        with self._lock:
            return self._announced.get((run_id, hop_index))

    def send(
        self, blob: BlobRef, *, offset: int, chunk_size: int, hold: Hold | None = None
    ) -> Iterator[bytes]:
        """``blob`` from ``offset``: from the store, or, while its upload still arrives,
        cut through from that upload (:func:`coordinator.blobs_follow.follow`: the last
        byte only once the whole blob is stored and its hash checked). A stream that
        follows an upload runs inside ``hold()``, when given (a cap on such streams).

        Raises:
            NotFoundError: the blob is neither stored nor arriving.
            TransportError: (while the stream runs) its upload stalled; retry later.
        """
        with self._lock:
            key = self._arriving.get(blob)
        if key is None or self._blobs.exists(blob.blob_id):
            return self._blobs.read(blob.blob_id, offset=offset, chunk_size=chunk_size)
        stream = follow(
            self._blobs,
            key,
            blob,
            offset=offset,
            chunk_size=chunk_size,
            stall_seconds=self._stall_seconds,
        )
        return stream if hold is None else _held(hold, stream)

    def arriving(self, blob: BlobRef) -> bool:
        """Whether ``blob`` is not stored yet but its upload has started."""
        with self._lock:
            return blob in self._arriving and not self._blobs.exists(blob.blob_id)

    def upload_status(self, site_id: str, transfer_id: str) -> tuple[int, BlobRef | None]:
        """(bytes committed, the stored blob once the upload finished)."""
        key = transfer_key(site_id, transfer_id)
        done = self._blobs.finished(key)
        if done is not None:
            return done.size, done
        return self._blobs.committed(key), None

    def download(
        self,
        site_id: str,
        run_id: str,
        hop_index: int,
        *,
        offset: int,
        chunk_size: int,
        hold: Hold | None = None,
    ) -> Iterator[bytes]:
        """The input of the site's hop, or (``hop_index`` the run's hop count) the final
        model the site is to evaluate, from ``offset``, in chunks of ``chunk_size`` bytes;
        an input still arriving is followed inside ``hold()`` (see :meth:`send`).

        Raises:
            NotFoundError, Denied, ConflictError: the site holds no such hop, or the hop is
                the first (it has no input).
        """
        run = self._store.get_run(run_id)
        if hop_index == run.total_hops and self._scheduler.evaluations.expects(site_id, run):
            blob = run.result  # the final model, for the site to evaluate
            if blob is None:
                raise NotFoundError(f"run {run.run_id} has no final model")
        else:
            hop = self._hop(site_id, run_id, hop_index, early=True)
            self._scheduler.clocks.touch(run_id, hop_index, site_id, Phase.TRAINING)
            blob = hop.input or (run.start_model if hop_index == 0 else None)
            if blob is None:
                raise NotFoundError(
                    f"hop {hop.hop_index + 1} has no input model (it is the first hop)"
                )
            if hop.input is None:  # the owner's start model: nobody can seal it again
                problem = copy_problem(self._blobs, blob) if offset == 0 else None
                if problem is not None:
                    raise ConflictError(f"the start model of run {run_id} {problem}")
            elif offset == 0 and not self.arriving(blob):
                self._check_input(site_id, hop, blob)
        return self.send(blob, offset=offset, chunk_size=chunk_size, hold=hold)

    def _hop(self, site_id: str, run_id: str, hop_index: int, *, early: bool) -> HopRecord:
        """The site's hop: assigned, or (``early``) started while the hop before uploads.

        Raises:
            TransportError: the hop is planned for the site but the hop before is still in
                flight (its output not arriving now, or not completed yet): retry later.
        """
        try:
            if not early:
                return self._scheduler.hop_for_site(site_id, run_id, hop_index)
            return self._scheduler.hop_for_site(site_id, run_id, hop_index, early=True)
        except ConflictError:
            if self._scheduler.cut_through.waits_on(run_id, hop_index, site_id):
                raise TransportError(
                    f"hop {hop_index} is still in flight; retry hop {hop_index + 1} later",
                    run_id=run_id,
                    hop=hop_index,
                ) from None
            raise

    def _check_input(self, site_id: str, hop: HopRecord, blob: BlobRef) -> None:
        """Checks the stored input of ``hop`` against its address before it is sent (one
        disk read of it, outside the lock); a copy missing or corrupt is sealed again by
        its sender (:meth:`Recovery.reseal_input`) and this download is refused.

        Raises:
            ConflictError: the copy is missing or corrupt; the hop is offered again later.
        """
        problem = copy_problem(self._blobs, blob)
        if problem is None:
            return
        journal = self._scheduler.journal
        with journal.transaction():
            self._scheduler.hop_for_site(site_id, hop.run_id, hop.hop_index)
            decision = self._scheduler.recovery.reseal_input(hop.run_id, hop.hop_index, problem)
        raise ConflictError(
            f"the input of hop {hop.hop_index + 1} {problem} at the coordinator; "
            + (
                "the run failed"
                if decision.action is Action.ABORT
                else "it is sealed again and the hop offered again"
            ),
            run_id=hop.run_id,
            hop=hop.hop_index,
        )

    def result(self, run_id: str, *, offset: int, chunk_size: int) -> Iterator[bytes]:
        """A succeeded run's final model (sealed to the study owner), from ``offset``, in
        chunks of ``chunk_size`` bytes.

        Raises:
            ConflictError: the run has not succeeded.
        """
        run = self._store.get_run(run_id)
        if run.state is not RunState.SUCCEEDED or run.result is None:
            raise ConflictError(
                f"run {run.run_id} has no result: it is {run.state.value}", run_id=run.run_id
            )
        return self._blobs.read(run.result.blob_id, offset=offset, chunk_size=chunk_size)

    def hop_output(
        self, run_id: str, hop_index: int, *, offset: int, chunk_size: int
    ) -> Iterator[bytes]:
        """The stored output of a completed hop, of a run in any state (sealed to the next
        hop's site, and to the study owner when the plan asks for escrow), from ``offset``,
        in chunks of ``chunk_size`` bytes. From byte 0 the stored copy is checked against
        its address first (one disk read of it).

        Raises:
            NotFoundError: the run has no such hop.
            ConflictError: the hop has not completed, or its stored copy is missing or
                corrupt.
        """
        run = self._store.get_run(run_id)
        number = hop_index + 1  # people count hops from 1
        if hop_index >= run.total_hops:
            raise NotFoundError(
                f"run {run_id} has no hop {number}: it has {run.total_hops}", run_id=run_id
            )
        hop = self._store.get_hop(run_id, hop_index)
        if hop.output is None:
            raise ConflictError(
                f"hop {number} of run {run_id} has no output: it is {hop.state.value}",
                run_id=run_id,
                hop=hop_index,
            )
        problem = copy_problem(self._blobs, hop.output) if offset == 0 else None
        if problem is not None:
            raise ConflictError(
                f"the coordinator's copy of hop {number}'s output {problem}",
                run_id=run_id,
                hop=hop_index,
            )
        return self._blobs.read(hop.output.blob_id, offset=offset, chunk_size=chunk_size)


def transfer_key(site_id: str, transfer_id: str) -> str:
    """The blob store's key of a site's upload: scoped to the site, so one site can never
    touch another's partial upload."""
    if not transfer_id or len(transfer_id) > 128:
        raise BlobError("transfer_id must be 1-128 characters")
    return hashlib.sha256(f"{site_id}/{transfer_id}".encode()).hexdigest()
