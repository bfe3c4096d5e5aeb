"""Content-addressed blob storage for sealed model blobs: resumable, streamed, verified."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import TYPE_CHECKING, BinaryIO, Protocol

from baton.domain import BlobRef
from baton.errors import BlobError, NotFoundError
from baton.io import atomic_write, fsync_dir, iter_chunks

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from pathlib import Path

_TRANSFER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 1 << 20
_LOCK_STRIPES = 64


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


class FileBlobStore:
    """``BlobStore`` on a local file system, never holding a whole blob in memory.

    Layout under ``root`` (directories 0700, files 0600):
    ``partial/<transfer_id>`` for open uploads (their size is ``committed``, so uploads
    resume across restarts) and ``sha256/<first 2 hex>/<hex>`` for finished blobs. Appends
    are hashed as they arrive and written without an fsync each: the partial file is
    fsynced where it matters, when ``committed`` reports it (a resume point) and in
    ``finish``, which then renames it into place atomically and fsyncs both directories.
    ``finish`` hashes the partial file again only if its appends were not all seen by this
    process (an upload resumed across a restart).

    Constraints: the contract of ``BlobStore``. One process owns ``root``: locks are
    in-process. File system errors are raised as ``BlobError`` naming the path.

    Args:
        root: The store's directory; created (0700, with missing parents) if absent.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._partial = root / "partial"
        self._done = root / "done"
        self._blobs = root / "sha256"
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._hashes: dict[str, tuple[hashlib._Hash, int]] = {}
        """Per open upload, the SHA-256 of its appends so far and how many bytes it covers."""
        _make_private_dir(root, parents=True)
        _make_private_dir(self._partial)
        _make_private_dir(self._done)
        _make_private_dir(self._blobs)

    @property
    def root(self) -> Path:
        """The store's directory."""
        return self._root

    def committed(self, transfer_id: str) -> int:
        """Bytes durably stored for an open upload (the partial file's size, fsynced
        first: a resume point); 0 if none."""
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return 0
            except OSError as exc:
                raise BlobError(f"{path}: cannot open upload ({exc.strerror})") from exc
            with os.fdopen(fd, "rb") as f:
                os.fsync(f.fileno())
                return os.fstat(f.fileno()).st_size

    def append(self, transfer_id: str, offset: int, data: bytes) -> int:
        """Appends ``data`` at ``offset`` and hashes it; returns the new committed size.

        Raises:
            BlobError: ``offset`` is not the committed size, or the write failed (the
                file is then cut back to its committed size).
        """
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            committed = _file_size(path)
            if offset != committed:
                raise BlobError(
                    f"transfer {transfer_id!r}: chunk offset {offset} does not match the "
                    f"{committed} bytes committed"
                )
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(path, flags, 0o600)
            except OSError as exc:
                raise BlobError(f"{path}: cannot open upload ({exc.strerror})") from exc
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                os.ftruncate(fd, committed)
                raise BlobError(f"{path}: cannot append ({exc.strerror})") from exc
            finally:
                os.close(fd)
            if committed == 0:
                fsync_dir(self._partial)
                self._hashes[transfer_id] = (hashlib.sha256(), 0)
            sha, covered = self._hashes.get(transfer_id, (None, -1))
            if sha is not None and covered == committed:
                sha.update(data)  # hashlib releases the GIL for large buffers
                self._hashes[transfer_id] = (sha, committed + len(data))
            return committed + len(data)

    def finish(self, transfer_id: str, *, expected_sha256: str, expected_size: int) -> BlobRef:
        """Verifies size and SHA-256 (streamed) and moves the upload to its address.

        Raises:
            BlobError: ``expected_sha256`` is malformed (the upload is kept), or the size
                or hash does not match (the upload is discarded).
        """
        _check_blob_id(expected_sha256)
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise BlobError(f"{path}: cannot open upload ({exc.strerror})") from exc
            seen = self._hashes.pop(transfer_id, None)
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != expected_size:
                    digest = ""
                elif seen is not None and seen[1] == size:
                    digest = seen[0].hexdigest()
                else:
                    digest = _hash_stream(f)
                os.fsync(f.fileno())
            if size != expected_size or digest != expected_sha256:
                path.unlink(missing_ok=True)
                what = (
                    f"{size} bytes, expected {expected_size}"
                    if size != expected_size
                    else f"SHA-256 {digest}, expected {expected_sha256}"
                )
                raise BlobError(f"transfer {transfer_id!r}: upload discarded: {what}")
            target = self._blob_path(digest)
            try:
                _make_private_dir(target.parent)
                if target.exists():
                    path.unlink()  # same bytes already stored
                else:
                    os.replace(path, target)
                    fsync_dir(target.parent)
                fsync_dir(self._partial)
                # Remember the outcome, so a site asking after a restart learns it is done.
                record = self._done / _check_transfer_id(transfer_id)
                atomic_write(record, f"{digest} {size}\n")
            except OSError as exc:
                raise BlobError(f"{target}: cannot store blob ({exc.strerror})") from exc
            return BlobRef(blob_id=digest, size=size)

    def finished(self, transfer_id: str) -> BlobRef | None:
        """The blob a finished upload stored, from its record on disk, or None."""
        record = self._done / _check_transfer_id(transfer_id)
        try:
            blob_id, size = record.read_text(encoding="ascii").split()
        except (FileNotFoundError, ValueError):
            return None
        return BlobRef(blob_id=blob_id, size=int(size))

    def abort(self, transfer_id: str) -> None:
        """Deletes the partial upload, if any."""
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            self._hashes.pop(transfer_id, None)
            path.unlink(missing_ok=True)

    def exists(self, blob_id: str) -> bool:
        """Whether the blob's file exists."""
        return self._blob_path(blob_id).is_file()

    def size(self, blob_id: str) -> int:
        """The blob's length in bytes; ``NotFoundError`` if absent."""
        path = self._blob_path(blob_id)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found") from None

    def read(
        self, blob_id: str, *, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Generator[bytes, None, None]:
        """Streams the blob from disk, one chunk of at most ``chunk_size`` bytes at a time.

        The file opens on the first chunk and closes when the stream ends, or when the
        consumer calls ``close()`` on it (or drops it).
        """
        _check_read(offset, chunk_size, self.size(blob_id))
        return iter_chunks(self._blob_path(blob_id), chunk_size, offset=offset)

    def _partial_path(self, transfer_id: str) -> Path:
        return self._partial / _check_transfer_id(transfer_id)

    def _blob_path(self, blob_id: str) -> Path:
        return self._blobs / _check_blob_id(blob_id)[:2] / blob_id

    def _lock(self, transfer_id: str) -> threading.Lock:
        return self._locks[hash(transfer_id) % _LOCK_STRIPES]


class MemoryBlobStore:
    """``BlobStore`` in dictionaries, for unit tests; the same contract, no durability."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partial: dict[str, bytearray] = {}
        self._done: dict[str, BlobRef] = {}
        self._blobs: dict[str, bytes] = {}

    def committed(self, transfer_id: str) -> int:
        """Bytes held for an open upload; 0 if none."""
        _check_transfer_id(transfer_id)
        with self._lock:
            return len(self._partial.get(transfer_id, b""))

    def append(self, transfer_id: str, offset: int, data: bytes) -> int:
        """Appends ``data`` at ``offset``; returns the new committed size."""
        _check_transfer_id(transfer_id)
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
        _check_transfer_id(transfer_id)
        _check_blob_id(expected_sha256)
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

    def finished(self, transfer_id: str) -> BlobRef | None:
        """The blob a finished upload stored, or None."""
        _check_transfer_id(transfer_id)
        with self._lock:
            return self._done.get(transfer_id)

    def abort(self, transfer_id: str) -> None:
        """Drops the open upload, if any."""
        _check_transfer_id(transfer_id)
        with self._lock:
            self._partial.pop(transfer_id, None)

    def exists(self, blob_id: str) -> bool:
        """Whether the blob is stored."""
        _check_blob_id(blob_id)
        with self._lock:
            return blob_id in self._blobs

    def size(self, blob_id: str) -> int:
        """The blob's length in bytes; ``NotFoundError`` if absent."""
        return len(self._get(blob_id))

    def read(self, blob_id: str, *, offset: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yields the blob from ``offset`` in chunks of at most ``chunk_size`` bytes."""
        data = self._get(blob_id)
        _check_read(offset, chunk_size, len(data))
        return (data[i : i + chunk_size] for i in range(offset, len(data), chunk_size))

    def _get(self, blob_id: str) -> bytes:
        _check_blob_id(blob_id)
        with self._lock:
            try:
                return self._blobs[blob_id]
            except KeyError:
                raise NotFoundError(f"blob {blob_id} not found") from None


def _check_transfer_id(transfer_id: str) -> str:
    if not _TRANSFER_ID.fullmatch(transfer_id) or transfer_id in (".", ".."):
        raise BlobError(
            f"invalid transfer id {transfer_id[:140]!r}: use 1-128 of A-Z a-z 0-9 . _ -"
        )
    return transfer_id


def _check_blob_id(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise BlobError(f"invalid blob id {blob_id[:80]!r}: expected 64 lower-case hex digits")
    return blob_id


def _check_read(offset: int, chunk_size: int, size: int) -> None:
    if chunk_size < 1:
        raise BlobError(f"chunk size must be at least 1, not {chunk_size}")
    if not 0 <= offset <= size:
        raise BlobError(f"read offset {offset} is outside the blob's {size} bytes")


def _hash_stream(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _make_private_dir(path: Path, *, parents: bool = False) -> None:
    try:
        path.mkdir(mode=0o700, parents=parents)
    except FileExistsError:
        if not path.is_dir():
            raise BlobError(f"{path}: exists and is not a directory") from None
        return
    except OSError as exc:
        raise BlobError(f"{path}: cannot create blob directory ({exc.strerror})") from exc
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
