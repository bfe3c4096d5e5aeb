"""Background hashing for streaming sealed hops (durable files are :mod:`baton.io`)."""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType


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
