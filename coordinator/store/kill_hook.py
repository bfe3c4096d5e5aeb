"""A test-only crash hook: the coordinator SIGKILLs itself right after a run's Nth durable write."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from baton import exit_codes

logger = logging.getLogger(__name__)

ENV = "BATON_TEST_KILL_AT_WRITE"
"""The environment variable that arms the hook (tests only; never set it in production).

``N >= 1``: the process kills itself with SIGKILL right after durable write number N of
its state directory, counted over every coordinator that has used it (see :func:`bind`);
``0``: it only counts and logs every durable write. Unset or empty: off.
"""

COUNT_FILE = "test-kill-writes"
"""The file in the state directory that holds the durable writes counted so far."""

SQLITE_COMMIT = "sqlite commit"
AUDIT_APPEND = "audit append"
BLOB_FINISH = "blob finish"

_WIDTH = 20  # digits of the persisted count: rewritten in place, never a shorter text


class _Hook:
    """The armed hook's state: the write to die at (0: never), the writes so far, and
    the file that persists them."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.count = 0
        self.fd = -1
        self.lock = threading.Lock()


_state: _Hook | None = None
_read = False
_read_lock = threading.Lock()


def _arm() -> _Hook | None:
    """Reads :data:`ENV` once per process; an invalid value stops the process (exit 100)."""
    global _state, _read
    with _read_lock:
        if _read:
            return _state
        _read = True
        raw = os.environ.get(ENV, "").strip()
        if not raw:
            return None
        if not raw.isdigit():
            logger.critical(
                "%s=%r is not a write number (a whole number >= 0); the coordinator stops",
                ENV,
                raw,
            )
            os._exit(exit_codes.COORDINATOR_CONFIG)
        _state = _Hook(int(raw))
        logger.warning(
            "TEST HOOK ARMED: %s=%s: this coordinator %s; never set it outside tests",
            ENV,
            raw,
            f"kills itself (SIGKILL) after durable write {raw} of its state directory"
            if _state.kill_at
            else "counts every durable write",
        )
        return _state


def bind(state_dir: Path) -> None:
    """Counts from now on the durable writes of ``state_dir``: the count goes on from the
    one its :data:`COUNT_FILE` holds (the writes of earlier coordinators on it), and every
    write updates that file before the hook may kill. Call it once the process holds the
    state directory, before its first write. Does nothing unless :data:`ENV` is set.

    A count file that cannot be read or written stops the process (exit 100).
    """
    hook = _state if _read else _arm()
    if hook is None:
        return
    path = state_dir / COUNT_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        text = os.pread(fd, _WIDTH + 1, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        logger.critical("test kill hook: cannot use %s (%s); the coordinator stops", path, exc)
        os._exit(exit_codes.COORDINATOR_CONFIG)
    with hook.lock:
        hook.fd = fd
        hook.count += int(text) if text.isdigit() else 0
        _persist(hook)
    logger.warning("test kill hook: %d durable write(s) of %s so far", hook.count, state_dir)


def _persist(hook: _Hook) -> None:
    """Writes the count to the bound file (in place: a SIGKILL leaves the page cache)."""
    if hook.fd >= 0:
        os.pwrite(hook.fd, f"{hook.count:0{_WIDTH}d}\n".encode("ascii"), 0)


def durable_write(kind: str) -> None:
    """Counts one durable write that has just completed, and dies if it is the chosen one.

    Called right AFTER the write is durable (a SQLite commit, a signed audit-log append, a
    stored blob), so a kill at write N leaves exactly writes 1..N on disk and none of the
    in-memory follow-up (the audit append a commit queued, the outbox entry cleared, the
    stream notified): the states a real crash leaves. Killing before the write instead
    would duplicate the state left by a kill after write N-1. The count is persisted (see
    :func:`bind`) before the kill. Does nothing unless :data:`ENV` is set.

    Args:
        kind: What was written (``SQLITE_COMMIT``, ``AUDIT_APPEND``, ``BLOB_FINISH``).
    """
    hook = _state if _read else _arm()
    if hook is None:
        return
    with hook.lock:  # held while dying: no other write is counted past the chosen one
        hook.count += 1
        _persist(hook)
        logger.info("test kill hook: durable write %d (%s)", hook.count, kind)
        if hook.count == hook.kill_at:
            logger.warning("test kill hook: SIGKILL after durable write %d (%s)", hook.count, kind)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def after_commit(write: bool) -> None:
    """Counts a committed write transaction (``write``); a read-only one is no write."""
    if write:
        durable_write(SQLITE_COMMIT)
