"""Durable files: one atomic write, one directory fsync, one streaming atomic file, exact reads.

Every file Baton writes that a crash must not leave half-written goes through here, with
one guarantee: after :func:`atomic_write` returns (or :meth:`AtomicFile.commit`), the new
contents are on disk and the rename is durable (file and directory fsynced); before that,
readers see the old file or none, never a part.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["AtomicFile", "atomic_write", "fsync_dir", "iter_chunks", "read_into"]


def fsync_dir(directory: Path) -> None:
    """Makes the entries of ``directory`` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o600, exclusive: bool = False
) -> None:
    """Replaces ``path`` with ``data`` (``str`` as UTF-8), durably and atomically.

    The file gets permissions ``mode`` before any byte is written, so a secret is never
    readable by others, even for a moment. With ``exclusive``, an existing ``path`` is kept
    and the write fails instead.

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists.
        OSError: The directory is missing or not writable, or the disk is full; the old
            file, if any, is then untouched and no temporary file is left behind.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with AtomicFile(path, mode=mode, exclusive=exclusive) as out:
        out.write(memoryview(payload))
        out.commit()


def read_into(src: io.FileIO, view: memoryview) -> int:
    """Fills ``view`` from ``src``; returns the bytes read (fewer only at end of file)."""
    total = 0
    while total < len(view):
        got = src.readinto(view[total:])
        if not got:
            break
        total += got
    return total


def iter_chunks(path: Path, chunk_size: int, *, offset: int = 0) -> Generator[bytes, None, None]:
    """Yields the bytes of ``path`` from ``offset`` in chunks of ``chunk_size`` (the last
    may be shorter). The file opens on the first chunk and closes when the stream ends or
    the consumer calls ``close()`` on it."""
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(chunk_size):
            yield chunk


class AtomicFile:
    """A new file that appears at ``target`` only when committed.

    It is written as a temporary file beside ``target`` (permissions ``mode``, 0600 by
    default); :meth:`sync` makes it durable, :meth:`commit` renames it onto ``target``
    (replacing any file there, or failing if one is there and ``exclusive``) and fsyncs the
    directory. Leaving the ``with`` block without committing deletes the temporary file.
    """

    def __init__(self, target: Path, *, mode: int = 0o600, exclusive: bool = False) -> None:
        self._target = target
        self._exclusive = exclusive
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        self._path = Path(name)
        self._file = io.FileIO(fd, "wb")
        if mode != 0o600:
            os.fchmod(fd, mode)
        self._done = self._synced = False

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
        if not self._done:
            self._path.unlink(missing_ok=True)

    def write(self, data: memoryview | bytes) -> None:
        """Writes all of ``data``."""
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0 :]

    def sync(self) -> None:
        """Flushes the file's contents to disk."""
        os.fsync(self._file.fileno())
        self._synced = True

    def commit(self) -> None:
        """Makes the file durable (unless :meth:`sync` did) and renames it onto the target.

        Raises:
            FileExistsError: The file is ``exclusive`` and the target exists (kept as it is).
        """
        if not self._synced:
            self.sync()
        self._file.close()
        if self._exclusive:
            os.link(self._path, self._target)  # atomic, and fails if the target exists
            self._path.unlink()
        else:
            os.replace(self._path, self._target)
        self._done = True
        fsync_dir(self._target.parent)
