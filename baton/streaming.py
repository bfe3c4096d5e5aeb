"""File plumbing for streaming sealed hops: exact reads, atomic replacement, background hashing."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType


def read_into(src: io.FileIO, view: memoryview) -> int:
    """Fills ``view`` from ``src``; returns the bytes read (fewer only at end of file)."""
    total = 0
    while total < len(view):
        got = src.readinto(view[total:])
        if not got:
            break
        total += got
    return total


class AtomicFile:
    """A new file (mode 0600) that appears at ``target`` only when committed.

    It is written as a temporary file beside ``target``; :meth:`sync` makes it durable,
    :meth:`commit` renames it onto ``target`` (replacing any file there) and fsyncs the
    directory. Leaving the ``with`` block without committing deletes the temporary file.
    """

    def __init__(self, target: Path) -> None:
        self._target = target
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        self._path = Path(name)
        self._file = io.FileIO(fd, "wb")
        self._done = self._synced = False

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
        if not self._done:
            self._path.unlink(missing_ok=True)

    def write(self, data: memoryview) -> None:
        """Writes all of ``data``."""
        while data:
            data = data[self._file.write(data) or 0 :]

    def sync(self) -> None:
        """Flushes the file's contents to disk."""
        os.fsync(self._file.fileno())
        self._synced = True

    def commit(self) -> None:
        """Makes the file durable (unless :meth:`sync` did) and renames it onto the target."""
        if not self._synced:
            self.sync()
        self._file.close()
        os.replace(self._path, self._target)
        self._done = True
        directory = os.open(self._target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class HashedBuffers:
    """Rotating chunk buffers whose contents a worker thread hashes (SHA-256), in order.

    hashlib releases the GIL, so the whole-blob hash runs beside the caller's own work on
    the next chunk (per-chunk hash, AEAD, I/O).

    Constraints: a view from :meth:`next` MUST NOT be written after it was passed to
    :meth:`hash`; :meth:`next` hands its buffer out again only once the worker is done.

    Args:
        size: Bytes per buffer (the largest chunk).
        count: Buffers in rotation.
    """

    def __init__(self, size: int, count: int = 2) -> None:
        self._buffers = [bytearray(size) for _ in range(count)]
        self._pending: list[Future[None] | None] = [None] * count
        self._turn = -1
        self._sha256 = hashlib.sha256()
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

    def hash(self, view: memoryview) -> None:
        """Queues ``view`` (from the latest :meth:`next`) for the running hash."""
        self._pending[self._turn] = self._pool.submit(self._sha256.update, view)

    def hexdigest(self) -> str:
        """The SHA-256 of everything queued so far."""
        for turn in range(len(self._buffers)):
            self._wait(turn)
        return self._sha256.hexdigest()

    def _wait(self, turn: int) -> None:
        pending = self._pending[turn]
        if pending is not None:
            pending.result()
            self._pending[turn] = None
