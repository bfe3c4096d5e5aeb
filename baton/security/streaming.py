"""Background hashing and growing files for streaming sealed hops (durable files: baton.io)."""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from baton.errors import BlobError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

T = TypeVar("T")


class HashedBuffers:
    """Rotating chunk buffers whose contents a worker thread hashes (SHA-256), in order.

    hashlib releases the GIL, so the whole-blob hash and, with ``per_chunk``, each chunk's
    own hash run beside the caller's own work on the next chunk (AEAD, I/O).

    Constraints: a view from :meth:`next` MUST NOT be written after it was passed to
    :meth:`hash`; :meth:`next` hands its buffer out again only once the worker hashed it
    (a caller still using a view, e.g. to decrypt it after its hash checked out, keeps at
    most ``count - 1`` views in use).

    Args:
        size: Bytes per buffer (the largest chunk).
        count: Buffers in rotation.
        per_chunk: Also hash each view on its own (:meth:`hash`'s result,
            :meth:`chunk_digests`).
        whole: Hash the views as one stream (:meth:`hexdigest`).
    """

    def __init__(
        self, size: int, count: int = 2, *, per_chunk: bool = False, whole: bool = True
    ) -> None:
        self._buffers = [bytearray(size) for _ in range(count)]
        self._pending: list[Future[bytes | None] | None] = [None] * count
        self._turn = -1
        self._sha256 = hashlib.sha256()
        self._per_chunk, self._whole = per_chunk, whole
        self._digests: list[bytes] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-sha256")

    def __enter__(self) -> HashedBuffers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def next(self, length: int) -> memoryview:
        """Returns the next free buffer, cut to ``length`` bytes."""
        self._turn = (self._turn + 1) % len(self._buffers)
        self._wait(self._turn)
        return memoryview(self._buffers[self._turn])[:length]

    def hash(self, view: memoryview) -> Future[bytes | None]:
        """Queues ``view`` (from the latest :meth:`next`); the result is its own raw
        SHA-256 with ``per_chunk``, else None."""
        pending = self._pool.submit(self._hash, view)
        self._pending[self._turn] = pending
        return pending

    def hexdigest(self) -> str:
        """The SHA-256 of everything queued so far (with ``whole``)."""
        self._drain()
        return self._sha256.hexdigest()

    def chunk_digests(self) -> list[bytes]:
        """The raw SHA-256 of each view queued so far, in order (with ``per_chunk``)."""
        self._drain()
        return list(self._digests)

    def _hash(self, view: memoryview) -> bytes | None:
        if self._whole:
            self._update_whole(view)
        if not self._per_chunk:
            return None
        digest = hashlib.sha256(view).digest()
        self._digests.append(digest)
        return digest

    def _update_whole(self, view: memoryview) -> None:
        self._sha256.update(view)

    def _drain(self) -> None:
        for turn in range(len(self._buffers)):
            self._wait(turn)

    def _wait(self, turn: int) -> None:
        pending = self._pending[turn]
        if pending is not None:
            pending.result()
            self._pending[turn] = None


class Tail:
    """A file that another thread appends to, read from its start while it grows.

    The writer reports each new length with :meth:`grew` and calls :meth:`end` when it
    stops (done or failed); :meth:`readinto` waits for bytes that are not written yet, and
    reads end of file once the writer ended. A reader that gives up calls :meth:`abandon`:
    the writer's next :meth:`grew` then raises, which stops it.

    Constraints: the writer MUST have written (flushed) the bytes it reports.

    Args:
        path: The file; it may not exist before the first :meth:`grew`.
        size: The length the file will have once complete.
        sha256: The SHA-256 (hex) the writer checks the whole file against before it
            ends without error (a download checking what it received): a reader may then
            take :attr:`checked_sha256` as the hash of what it read, instead of hashing it
            again.
    """

    def __init__(self, path: Path, size: int, *, sha256: str | None = None) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256
        self._completed = False
        self._cond = threading.Condition()
        self._length = 0
        self._pos = 0
        self._ended = False
        self._abandoned = False
        self.writer_stopped = False
        """Whether :meth:`grew` stopped the writer because the reader abandoned the file."""
        self._file: io.FileIO | None = None

    def __enter__(self) -> Tail:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()

    def grew(self, length: int) -> None:
        """Reports that the file now holds ``length`` bytes (called by the writer).

        Raises:
            BlobError: The reader abandoned the file.
        """
        with self._cond:
            if self._abandoned:
                self.writer_stopped = True
                raise BlobError("the transfer was abandoned: its reader rejected the bytes")
            self._length = max(self._length, length)
            self._cond.notify_all()

    def end(self, *, completed: bool = False) -> None:
        """Reports that the writer stopped; reads past what it wrote see end of file.
        ``completed``: it wrote the whole file and checked it against :attr:`sha256`."""
        with self._cond:
            self._ended = True
            self._completed = completed
            self._cond.notify_all()

    @property
    def checked_sha256(self) -> str | None:
        """:attr:`sha256`, once the writer ended having checked the whole file against it;
        None before, after a failed writer, or when the tail was given none."""
        with self._cond:
            return self.sha256 if self._ended and self._completed else None

    def abandon(self) -> bool:
        """Stops the writer at its next :meth:`grew`; returns whether it had ended already."""
        with self._cond:
            self._abandoned = True
            return self._ended

    def readinto(self, view: memoryview) -> int:
        """Reads up to ``len(view)`` bytes into ``view``, waiting until some are written;
        returns 0 at the end (the writer ended and everything it wrote was read)."""
        with self._cond:
            while self._length <= self._pos and not self._ended:
                self._cond.wait()
            available = self._length - self._pos
        if available <= 0 or not view:
            return 0
        if self._file is None:
            self._file = io.FileIO(self.path, "r")
            self._file.seek(self._pos)
        got = self._file.readinto(view[: min(len(view), available)]) or 0
        self._pos += got
        return got

    def read(self, size: int) -> bytes:
        """Reads up to ``size`` bytes (fewer only at the end)."""
        buffer = bytearray(size)
        return bytes(buffer[: fill(self, memoryview(buffer))])


def fill(src: io.FileIO | Tail, view: memoryview) -> int:
    """Fills ``view`` from ``src``; returns the bytes read (fewer only at the end)."""
    total = 0
    while total < len(view) and (got := src.readinto(view[total:])):
        total += got
    return total


def read_while_written(tail: Tail, write: Callable[[Tail], None], read: Callable[[Tail], T]) -> T:
    """Runs ``write`` (which appends to ``tail``'s file) in a worker thread while ``read``
    reads it here, e.g. a download and the opening of the sealed hop it brings. A ``write``
    that returns has written the whole file and, if ``tail`` names a :attr:`Tail.sha256`,
    checked it against that hash.

    A failed ``write`` ends the file where it stopped; if ``read`` then fails (its input
    is short, or the file is gone because the writer removed what failed its hash), the
    writer's error is raised, as the cause. If ``read`` fails first, the writer is stopped
    at its next report and ``read``'s error is raised.

    Returns:
        What ``read`` returned, once ``write`` also finished without error.
    """

    def writing() -> None:
        completed = False
        try:
            write(tail)
            tail.grew(tail.size)
            completed = True
        finally:
            tail.end(completed=completed)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-fetch") as pool:
        written = pool.submit(writing)
        try:
            result = read(tail)
        except Exception:
            tail.abandon()
            # Wait for the writer (it stops at its next report): whichever failed on its own
            # first is the cause, however the two threads were scheduled.
            if (failed := written.exception()) is not None and not tail.writer_stopped:
                raise failed from None
            raise
        written.result()
    return result
