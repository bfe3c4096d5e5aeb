"""A test-only crash hook: the coordinator SIGKILLs itself right after its Nth durable write."""

from __future__ import annotations

import logging
import os
import signal
import threading

from baton import exit_codes

logger = logging.getLogger(__name__)

ENV = "BATON_TEST_KILL_AT_WRITE"
"""The environment variable that arms the hook (tests only; never set it in production).

``N >= 1``: the process kills itself with SIGKILL right after the Nth durable write since
it started; ``0``: it only counts and logs every durable write. Unset or empty: off.
"""

SQLITE_COMMIT = "sqlite commit"
AUDIT_APPEND = "audit append"
BLOB_FINISH = "blob finish"


class _Hook:
    """The armed hook's state: the write to die at (0: never) and the writes so far."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.count = 0
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
            f"kills itself (SIGKILL) after durable write {raw}"
            if _state.kill_at
            else "counts every durable write",
        )
        return _state


def durable_write(kind: str) -> None:
    """Counts one durable write that has just completed, and dies if it is the chosen one.

    Called right AFTER the write is durable (a SQLite commit, a signed audit-log append, a
    stored blob), so a kill at write N leaves exactly writes 1..N on disk and none of the
    in-memory follow-up (the audit append a commit queued, the outbox entry cleared, the
    stream notified): the states a real crash leaves. Killing before the write instead
    would duplicate the state left by a kill after write N-1. Does nothing unless
    :data:`ENV` is set.

    Args:
        kind: What was written (``SQLITE_COMMIT``, ``AUDIT_APPEND``, ``BLOB_FINISH``).
    """
    hook = _state if _read else _arm()
    if hook is None:
        return
    with hook.lock:  # held while dying: no other write is counted past the chosen one
        hook.count += 1
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
