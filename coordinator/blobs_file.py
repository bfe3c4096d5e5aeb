"""The blob store on a local file system: resumable uploads, streamed hashes, atomic renames."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING

from baton.domain import BlobRef
from baton.errors import BlobError, NotFoundError
from baton.io import atomic_write, fsync_dir, iter_chunks
from coordinator.blobs_checks import (
    check_blob_id,
    check_read,
    check_transfer_id,
    file_size,
    hash_stream,
    make_private_dir,
)
from coordinator.store.disk_full import blob_error
from coordinator.store.kill_hook import BLOB_FINISH, durable_write

if TYPE_CHECKING:
    from collections.abc import Generator
    from pathlib import Path

_LOCK_STRIPES = 64


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
        make_private_dir(root, parents=True)
        make_private_dir(self._partial)
        make_private_dir(self._done)
        make_private_dir(self._blobs)

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
                raise blob_error(path, "cannot open upload", exc) from exc
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
            committed = file_size(path)
            if offset != committed:
                raise BlobError(
                    f"transfer {transfer_id!r}: chunk offset {offset} does not match the "
                    f"{committed} bytes committed"
                )
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(path, flags, 0o600)
            except OSError as exc:
                raise blob_error(path, "cannot open upload", exc) from exc
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                os.ftruncate(fd, committed)
                raise blob_error(path, "cannot append", exc) from exc
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
        check_blob_id(expected_sha256)
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise blob_error(path, "cannot open upload", exc) from exc
            seen = self._hashes.pop(transfer_id, None)
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != expected_size:
                    digest = ""
                elif seen is not None and seen[1] == size:
                    digest = seen[0].hexdigest()
                else:
                    digest = hash_stream(f)
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
                make_private_dir(target.parent)
                if target.exists():
                    path.unlink()  # same bytes already stored
                else:
                    os.replace(path, target)
                    fsync_dir(target.parent)
                fsync_dir(self._partial)
                # Remember the outcome, so a site asking after a restart learns it is done.
                record = self._done / check_transfer_id(transfer_id)
                atomic_write(record, f"{digest} {size}\n")
            except OSError as exc:
                raise blob_error(target, "cannot store blob", exc) from exc
            durable_write(BLOB_FINISH)  # a test-only crash point, off by default
            return BlobRef(blob_id=digest, size=size)

    def arrived(self, transfer_id: str) -> int | None:
        """The partial file's length (no fsync, no lock), or None if there is none."""
        path = self._partial_path(transfer_id)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise blob_error(path, "cannot read upload size", exc) from exc

    def read_partial(
        self, transfer_id: str, *, offset: int, end: int, chunk_size: int = 1 << 20
    ) -> Generator[bytes, None, None]:
        """Streams bytes ``offset`` to ``end`` of the partial file. The file opens on the
        first chunk; an upload finished or discarded before then yields nothing, one
        closed later is still read whole from the open file (a rename or unlink keeps it)."""
        check_read(offset, chunk_size, end)
        return _range(self._partial_path(transfer_id), offset, end, chunk_size)

    def finished(self, transfer_id: str) -> BlobRef | None:
        """The blob a finished upload stored, from its record on disk, or None."""
        record = self._done / check_transfer_id(transfer_id)
        try:
            blob_id, size = record.read_text(encoding="ascii").split()
            return BlobRef(blob_id=check_blob_id(blob_id), size=int(size))
        except (FileNotFoundError, ValueError, BlobError):
            return None
        except OSError as exc:
            raise blob_error(record, "cannot read upload record", exc) from exc

    def abort(self, transfer_id: str) -> None:
        """Deletes the partial upload, if any."""
        path = self._partial_path(transfer_id)
        with self._lock(transfer_id):
            self._hashes.pop(transfer_id, None)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise blob_error(path, "cannot discard upload", exc) from exc

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
        except OSError as exc:
            raise blob_error(path, "cannot read blob size", exc) from exc

    def read(
        self, blob_id: str, *, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Generator[bytes, None, None]:
        """Streams the blob from disk, one chunk of at most ``chunk_size`` bytes at a time.

        The file opens on the first chunk and closes when the stream ends, or when the
        consumer calls ``close()`` on it (or drops it).
        """
        check_read(offset, chunk_size, self.size(blob_id))
        return _chunks(self._blob_path(blob_id), chunk_size, offset)

    def _partial_path(self, transfer_id: str) -> Path:
        return self._partial / check_transfer_id(transfer_id)

    def _blob_path(self, blob_id: str) -> Path:
        return self._blobs / check_blob_id(blob_id)[:2] / blob_id

    def _lock(self, transfer_id: str) -> threading.Lock:
        return self._locks[hash(transfer_id) % _LOCK_STRIPES]


def _chunks(path: Path, chunk_size: int, offset: int) -> Generator[bytes, None, None]:
    """:func:`baton.io.iter_chunks`, a file system error raised as ``BlobError``."""
    try:
        yield from iter_chunks(path, chunk_size, offset=offset)
    except OSError as exc:
        raise blob_error(path, "cannot read blob", exc) from exc


def _range(path: Path, offset: int, end: int, chunk_size: int) -> Generator[bytes, None, None]:
    """Bytes ``offset`` to ``end`` of ``path`` (fewer if it is shorter); nothing if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise blob_error(path, "cannot open upload", exc) from exc
    try:
        while offset < end:
            data = os.pread(fd, min(chunk_size, end - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data
    except OSError as exc:
        raise blob_error(path, "cannot read upload", exc) from exc
    finally:
        os.close(fd)
