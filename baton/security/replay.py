"""Replay, equivocation and rollback detection for sealed hops, in memory or on SQLite.

A receiver remembers, per run, the hash of every hop manifest it accepted. Against that
memory a new manifest for ``(run_id, hop_index)`` is:

- ``"replay"`` if that hop was accepted with the same manifest hash;
- ``"equivocation"`` if that hop was accepted with a different manifest hash (the sender
  signed two different manifests for one hop);
- ``"rollback"`` if a later hop of the run was already accepted;
- ``"fresh"`` otherwise.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator

Verdict = Literal["fresh", "replay", "equivocation", "rollback"]
"""What a guard says about a manifest; anything but ``"fresh"`` is a rejection."""


class ReplayGuard(Protocol):
    """Remembers which hop manifests a party accepted, per run.

    Constraints: :meth:`check` MUST NOT change state. :meth:`accept` MUST decide and
    record atomically: it records the manifest only when its verdict is ``"fresh"``, so
    that of two racing accepts for one hop exactly one is fresh. State MUST survive a
    restart for persistent implementations. A failure of the guard's storage MUST raise
    OSError.
    """

    def check(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest without recording it."""
        ...

    def accept(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest and records it if it is ``"fresh"``."""
        ...


def _verdict(accepted: str | None, last_hop: int | None, hop: int, manifest_hash: str) -> Verdict:
    """The verdict, given the hash accepted for this hop and the highest accepted hop."""
    if accepted is not None:
        return "replay" if accepted == manifest_hash else "equivocation"
    if last_hop is not None and hop < last_hop:
        return "rollback"
    return "fresh"


class MemoryReplayGuard:
    """A :class:`ReplayGuard` in process memory (tests, and parties that keep no state)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted: dict[tuple[str, int], str] = {}
        self._last: dict[str, int] = {}

    def check(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest without recording it."""
        with self._lock:
            return self._decide(run_id, hop_index, manifest_hash)

    def accept(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest and records it if it is ``"fresh"``."""
        with self._lock:
            verdict = self._decide(run_id, hop_index, manifest_hash)
            if verdict == "fresh":
                self._accepted[run_id, hop_index] = manifest_hash
                self._last[run_id] = max(hop_index, self._last.get(run_id, hop_index))
            return verdict

    def _decide(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        accepted = self._accepted.get((run_id, hop_index))
        return _verdict(accepted, self._last.get(run_id), hop_index, manifest_hash)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted_hops (
    run_id TEXT NOT NULL,
    hop_index INTEGER NOT NULL,
    manifest_hash TEXT NOT NULL,
    PRIMARY KEY (run_id, hop_index)
)
"""


class SqliteReplayGuard:
    """A :class:`ReplayGuard` persisted in an SQLite file (created, mode 0600, if missing).

    Each call opens its own connection and decides inside one ``BEGIN IMMEDIATE``
    transaction, so several processes may share the file.

    Args:
        path: The database file.
        busy_timeout_s: How long to wait for another writer's lock.

    Raises:
        OSError: If the file cannot be created or is not a usable database.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self._path = path
        self._timeout = busy_timeout_s
        path.touch(mode=0o600, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    def check(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest without recording it."""
        with self._connect() as db:
            return self._decide(db, run_id, hop_index, manifest_hash)

    def accept(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for a manifest and records it if it is ``"fresh"``."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                verdict = self._decide(db, run_id, hop_index, manifest_hash)
                if verdict == "fresh":
                    db.execute(
                        "INSERT INTO accepted_hops (run_id, hop_index, manifest_hash)"
                        " VALUES (?, ?, ?)",
                        (run_id, hop_index, manifest_hash),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return verdict

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection, closed afterwards; sqlite3 errors surface as OSError."""
        try:
            with closing(
                sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
            ) as db:
                db.execute("PRAGMA synchronous = FULL")
                yield db
        except sqlite3.Error as exc:
            raise OSError(f"replay database {self._path}: {exc}") from None

    @staticmethod
    def _decide(db: sqlite3.Connection, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        row = db.execute(
            "SELECT manifest_hash FROM accepted_hops WHERE run_id = ? AND hop_index = ?",
            (run_id, hop_index),
        ).fetchone()
        (last,) = db.execute(
            "SELECT MAX(hop_index) FROM accepted_hops WHERE run_id = ?", (run_id,)
        ).fetchone()
        return _verdict(None if row is None else str(row[0]), last, hop_index, manifest_hash)
