"""A full disk under the coordinator's state: the call that hit it is refused as
UNAVAILABLE (sites retry), with an ERROR in the log, and nothing crashes; the next call
after space returns goes through."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path
from typing import Final

from baton.errors import BlobStoreFault, ServerFault, StoreError

logger = logging.getLogger(__name__)

FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
"""File system errors that mean "no space" (a full disk, an exhausted quota)."""
PUBLIC_MESSAGE: Final = "the coordinator's storage is full; retry later"
"""What the caller is told: no path, no detail."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an ``OSError`` or a SQLite error) means the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


def paused(where: Path, exc: BaseException) -> ServerFault:
    """Logs the full disk at ERROR and returns the UNAVAILABLE error to raise."""
    logger.error(
        "%s: the disk is full (%s); calls that write there are refused as UNAVAILABLE "
        "until space returns",
        where,
        exc,
    )
    return ServerFault(PUBLIC_MESSAGE, status="UNAVAILABLE")


def store_error(path: Path, exc: sqlite3.Error) -> StoreError | ServerFault:
    """The error a failed statement of the state database becomes (the transaction was
    rolled back): UNAVAILABLE for a full disk, else a ``StoreError`` naming the file."""
    if is_disk_full(exc):
        return paused(path, exc)
    return StoreError(f"{path}: {exc}")


def blob_error(path: Path, what: str, exc: OSError) -> BlobStoreFault | ServerFault:
    """The error a failed file operation of the blob store becomes: UNAVAILABLE for a full
    disk, else a :class:`BlobStoreFault` (INTERNAL; the caller is not told the path),
    logged at ERROR with ``what`` failed on ``path``."""
    if is_disk_full(exc):
        return paused(path, exc)
    logger.error("blob store: %s: %s (%s)", path, what, exc.strerror)
    return BlobStoreFault(f"{path}: {what} ({exc.strerror})")
