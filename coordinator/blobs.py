"""Content-addressed blob storage for sealed model blobs: resumable, streamed, verified.

The contract and the in-memory store are here; the file store is
:mod:`coordinator.blobs_file`, the shared name and bound checks :mod:`coordinator.blobs_checks`.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Protocol

from baton.domain import BlobRef
from baton.errors import BlobError, NotFoundError
from coordinator.blobs_checks import check_blob_id, check_read, check_transfer_id
from coordinator.blobs_file import FileBlobStore

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["BlobStore", "FileBlobStore", "MemoryBlobStore"]


class BlobStore(Protocol):
    """Blobs addressed by the SHA-256 of their bytes, uploaded in resumable appends.

    An upload is named by a transfer id (``[A-Za-z0-9._-]{1,128}``, not ``.`` or ``..``);
    a blob by its id, the lower-case hex SHA-256 of its bytes.

    Constraints (checked by the shared contract suite):
    - A malformed transfer id or blob id MUST raise ``BlobError``.
    - ``append`` MUST be given ``offset == committed(transfer_id)``, else ``BlobError``
      naming both; a rejected append changes nothing.
    - ``finish`` MUST verify size and SHA-256 before the blob becomes visible; on a
      mismatch it raises ``BlobError`` and discards the partial upload. A blob that
      already exists is fine (the upload is deduplicated). An upload with no appends is
      the empty blob.
    - ``size`` and ``read`` of an absent blob MUST raise ``NotFoundError``; ``read``
      with an offset outside ``[0, size]`` or a chunk size below 1 raises ``BlobError``.
      Both check eagerly, when called, not on the first chunk.
    - ``read`` yields chunks of at most ``chunk_size`` bytes that concatenate to the blob
      from ``offset``.
    - After a successful ``finish``, ``finished`` MUST return the stored blob for that
      transfer id, also after a restart (file store); before it, or after a failed
      ``finish``, it returns None.
    - ``arrived`` MUST return None for a transfer with no open upload (never started,
      finished or discarded); ``read_partial`` of such a transfer yields nothing.
    - Every method is thread-safe; appends to one transfer are serialized.
    """

    def committed(self, transfer_id: str) -> int:
        """Bytes durably stored for an open upload; 0 if there is none."""
        ...

    def append(self, transfer_id: str, offset: int, data: bytes) -> int:
        """Appends ``data`` at ``offset`` (which must be ``committed``); returns the new total."""
        ...

    def finish(self, transfer_id: str, *, expected_sha256: str, expected_size: int) -> BlobRef:
        """Verifies a complete upload and stores it under its content address."""
        ...

    def arrived(self, transfer_id: str) -> int | None:
        """Bytes an open upload has received so far (not yet made durable, perhaps), or
        None when none is open: the cheap question a reader of a growing upload asks."""
        ...

    def read_partial(
        self, transfer_id: str, *, offset: int, end: int, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Streams bytes ``offset`` to ``end`` of an open upload while it may still grow
        (``end`` at most ``arrived``); fewer, or none, if the upload closed meanwhile."""
        ...

    def abort(self, transfer_id: str) -> None:
        """Discards an open upload; a no-op if there is none."""
        ...

    def finished(self, transfer_id: str) -> BlobRef | None:
        """The blob a finished upload stored, or None (still open, failed, or unknown)."""
        ...

    def exists(self, blob_id: str) -> bool:
        """Whether the blob is stored."""
        ...

    def size(self, blob_id: str) -> int:
        """The blob's length in bytes."""
        ...

    def read(self, blob_id: str, *, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Streams the blob from ``offset`` in chunks of at most ``chunk_size`` bytes."""
        ...


class MemoryBlobStore:
    """``BlobStore`` in dictionaries, for unit tests; the same contract, no durability."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partial: dict[str, bytearray] = {}
        self._done: dict[str, BlobRef] = {}
        self._blobs: dict[str, bytes] = {}

    def committed(self, transfer_id: str) -> int:
        """Bytes held for an open upload; 0 if none."""
        check_transfer_id(transfer_id)
        with self._lock:
            return len(self._partial.get(transfer_id, b""))

    def append(self, transfer_id: str, offset: int, data: bytes) -> int:
        """Appends ``data`` at ``offset``; returns the new committed size."""
        check_transfer_id(transfer_id)
        with self._lock:
            buffer = self._partial.setdefault(transfer_id, bytearray())
            if offset != len(buffer):
                raise BlobError(
                    f"transfer {transfer_id!r}: chunk offset {offset} does not match the "
                    f"{len(buffer)} bytes committed"
                )
            buffer += data
            return len(buffer)

    def finish(self, transfer_id: str, *, expected_sha256: str, expected_size: int) -> BlobRef:
        """Verifies size and SHA-256 and stores the upload under its address."""
        check_transfer_id(transfer_id)
        check_blob_id(expected_sha256)
        with self._lock:
            data = bytes(self._partial.pop(transfer_id, b""))
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != expected_size or digest != expected_sha256:
                what = (
                    f"{len(data)} bytes, expected {expected_size}"
                    if len(data) != expected_size
                    else f"SHA-256 {digest}, expected {expected_sha256}"
                )
                raise BlobError(f"transfer {transfer_id!r}: upload discarded: {what}")
            self._blobs.setdefault(digest, data)
            ref = BlobRef(blob_id=digest, size=len(data))
            self._done[transfer_id] = ref
            return ref

    def arrived(self, transfer_id: str) -> int | None:
        """Bytes held for an open upload, or None if none is open."""
        check_transfer_id(transfer_id)
        with self._lock:
            buffer = self._partial.get(transfer_id)
            return None if buffer is None else len(buffer)

    def read_partial(
        self, transfer_id: str, *, offset: int, end: int, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Yields a copy of bytes ``offset`` to ``end`` of an open upload, chunk by chunk."""
        check_transfer_id(transfer_id)
        check_read(offset, chunk_size, end)
        with self._lock:
            data = bytes(self._partial.get(transfer_id, b"")[offset:end])
        return (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))

    def finished(self, transfer_id: str) -> BlobRef | None:
        """The blob a finished upload stored, or None."""
        check_transfer_id(transfer_id)
        with self._lock:
            return self._done.get(transfer_id)

    def abort(self, transfer_id: str) -> None:
        """Drops the open upload, if any."""
        check_transfer_id(transfer_id)
        with self._lock:
            self._partial.pop(transfer_id, None)

    def exists(self, blob_id: str) -> bool:
        """Whether the blob is stored."""
        check_blob_id(blob_id)
        with self._lock:
            return blob_id in self._blobs

    def size(self, blob_id: str) -> int:
        """The blob's length in bytes; ``NotFoundError`` if absent."""
        return len(self._get(blob_id))

    def read(self, blob_id: str, *, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yields the blob from ``offset`` in chunks of at most ``chunk_size`` bytes."""
        data = self._get(blob_id)
        check_read(offset, chunk_size, len(data))
        return (data[i : i + chunk_size] for i in range(offset, len(data), chunk_size))

    def _get(self, blob_id: str) -> bytes:
        check_blob_id(blob_id)
        with self._lock:
            try:
                return self._blobs[blob_id]
            except KeyError:
                raise NotFoundError(f"blob {blob_id} not found") from None
