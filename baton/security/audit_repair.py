"""Repairing an audit log whose last write was cut short (a crash, a full disk)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from baton.errors import AuditError

logger = logging.getLogger(__name__)

TRUNCATED = "truncated (no newline)"
"""How :func:`baton.security.audit.verify_log` names a line without its newline."""


def cut_partial_last_line(path: Path, fd: int, entries: int) -> bool:
    """Cuts an unterminated LAST line off the log open (for writing) as ``fd``.

    Every entry ends with a newline written in the same ``write`` as the entry, so an
    unterminated last line is an entry that never completed: removing it loses nothing
    that was ever part of the chain. Anything else (an unterminated line followed by
    more lines, or fewer complete lines than ``entries``) is left alone.

    Args:
        path: The log file.
        fd: The log, open for writing (and locked) by its one writer.
        entries: The complete entries before the partial line, as verified.

    Returns:
        Whether a partial line was cut off (with a logged warning).

    Raises:
        AuditError: The file cannot be read or cut.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror}") from None
    keep = data.rfind(b"\n") + 1
    if keep == len(data) or data.count(b"\n") != entries:
        return False
    try:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    except OSError as exc:
        raise AuditError(f"cannot repair audit log {path}: {exc.strerror}") from None
    logger.warning(
        "audit log %s ended in a partial line of %d bytes (an entry never completed); "
        "cut back to entry %d, the last complete one",
        path,
        len(data) - keep,
        entries,
    )
    return True
