"""Cut-through reads: a blob streamed to its recipient while its upload still arrives."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from baton.errors import TransportError
from coordinator.blobs_checks import check_read

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from baton.domain import BlobRef
    from coordinator.blobs import BlobStore

POLL_SECONDS = 0.02
"""How long a reader that caught up with an upload waits before it looks again."""


def follow(
    blobs: BlobStore,
    transfer_id: str,
    blob: BlobRef,
    *,
    offset: int,
    chunk_size: int,
    stall_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """Streams ``blob`` from ``offset`` while its upload ``transfer_id`` may still arrive.

    The upload's bytes are sent as they arrive, all but the blob's last byte, which is
    sent only from the stored blob: the stream completes only after the store checked the
    whole blob's size and SHA-256. Nothing is held in memory beyond one chunk. A reader
    that caught up waits for more, across an upload that was cut and resumed.

    Args:
        blobs: The blob store.
        transfer_id: The store's key of the upload that brings ``blob``.
        blob: The blob the upload declared (its address and size).
        offset: The first byte to send.
        chunk_size: Largest chunk yielded.
        stall_seconds: How long the upload may bring nothing before the stream gives up.
        clock: Monotonic seconds (tests pass a fake).

    Raises:
        BlobError: ``offset`` is outside the blob or ``chunk_size`` below 1 (eagerly).
        TransportError: nothing arrived for ``stall_seconds`` (the upload stalled, or was
            discarded as not the declared blob): a retryable status; the recipient
            resumes from the bytes it holds.
    """
    check_read(offset, chunk_size, blob.size)
    return _follow(blobs, transfer_id, blob, offset, chunk_size, stall_seconds, clock)


def _follow(
    blobs: BlobStore,
    transfer_id: str,
    blob: BlobRef,
    pos: int,
    chunk_size: int,
    stall_seconds: float,
    clock: Callable[[], float],
) -> Iterator[bytes]:
    progress = clock()
    while not blobs.exists(blob.blob_id):
        end = min(blobs.arrived(transfer_id) or 0, blob.size - 1)
        if end > pos:
            start = pos
            for data in blobs.read_partial(transfer_id, offset=pos, end=end, chunk_size=chunk_size):
                pos += len(data)
                yield data
            if pos > start:
                progress = clock()
                continue
        if clock() - progress > stall_seconds:
            raise TransportError(
                f"the upload of blob {blob.blob_id[:12]} brought nothing for "
                f"{stall_seconds:g} s after byte {pos}; resume later"
            )
        time.sleep(POLL_SECONDS)
    yield from blobs.read(blob.blob_id, offset=pos, chunk_size=chunk_size)
