"""The state database checked against the audit log's head at start-up: a lost WAL (or a
database older than the log) is reported before anything serves."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from baton.errors import StoreError

logger = logging.getLogger(__name__)

OUTBOX_KEY = "outbox"
"""The detail key of a coordinator audit entry naming its audit-outbox id."""
SHOWN_RUNS = 10
"""Most runs a report names one by one."""
SHOWN_EVENTS = 3
"""Most lost entries a report names for one run."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StateLoss:
    """What the audit log records and the database lacks."""

    database_outbox: int
    """The last audit-outbox id the database ever issued."""
    log_outbox: int
    """The last outbox id the audit log holds."""
    runs: dict[str, list[str]] = field(default_factory=dict)
    """Run id (``""``: no run) to the events the database lacks, e.g. ``hop_completed
    (hop 2)``."""

    def describe(self, database: Path, log: Path) -> str:
        """One paragraph: what is missing, and how to proceed."""
        lost = self.log_outbox - self.database_outbox
        names = [
            f"run {run_id} ({_some(events)})" if run_id else _some(events)
            for run_id, events in list(self.runs.items())[:SHOWN_RUNS]
        ]
        more = len(self.runs) - SHOWN_RUNS
        if more > 0:
            names.append(f"{more} more run(s)")
        return (
            f"the state database {database} lacks {lost} state change(s) that the audit log "
            f"{log} records: {'; '.join(names)}. Its write-ahead log ({database.name}-wal) "
            "was lost, or the database is older than the audit log. Restore the database "
            "together with its -wal file from a backup, or start with --accept-state-loss "
            "to go on without them (the audit log keeps their record)"
        )


def _some(events: list[str]) -> str:
    shown = ", ".join(events[:SHOWN_EVENTS])
    return shown + (f" and {len(events) - SHOWN_EVENTS} more" if len(events) > SHOWN_EVENTS else "")


def check_audit_head(database: Path, log: Path, *, accept_loss: bool) -> StateLoss | None:
    """Compares the last audit-outbox id the database issued with the audit log's head.

    Every coordinator state change queues its audit entry in the same transaction, and
    SQLite never reissues an outbox id, so a log naming a higher id than the database
    ever issued proves committed transactions were lost. With ``accept_loss`` the loss is
    logged as an ERROR and the database's counter moves past the log's head (new entries
    are then never mistaken for ones already written), so later starts pass.

    Returns:
        The loss (accepted), or None if the database has everything the log records.

    Raises:
        StoreError: The database lacks entries of the log, and ``accept_loss`` is false.
    """
    if not log.exists():
        return None
    db = sqlite3.connect(database, isolation_level=None)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_outbox'").fetchone()
        issued = int(row[0]) if row else 0
        loss = _read_beyond(log, issued)
        if loss is None:
            return None
        if not accept_loss:
            raise StoreError(loss.describe(database, log))
        logger.error("accepting state loss: %s", loss.describe(database, log))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'audit_outbox'")
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('audit_outbox', ?)",
                (loss.log_outbox,),
            )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return loss
    except sqlite3.Error as exc:
        raise StoreError(f"{database}: cannot check it against the audit log ({exc})") from None
    finally:
        db.close()


def _head_outbox(log: Path) -> int:
    """The outbox id of the log's last coordinator entry (0 if none in its last 64 KiB)."""
    with log.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - 65536))
        lines = file.read().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["detail"][OUTBOX_KEY])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def _read_beyond(log: Path, issued: int) -> StateLoss | None:
    """The entries of ``log`` whose outbox id is above ``issued``, by run: a start reads
    only the log's tail unless something is missing."""
    if _head_outbox(log) <= issued:
        return None
    runs: dict[str, list[str]] = {}
    head = issued
    with log.open("rb") as file:
        for line in file:
            try:
                entry = json.loads(line)
                outbox = int(entry["detail"][OUTBOX_KEY])
            except (ValueError, KeyError, TypeError):
                continue  # not a coordinator state change (or a line the log repairs)
            if outbox <= issued:
                continue
            head = max(head, outbox)
            hop = entry.get("hop")
            what = str(entry.get("event", "?")) + (f" (hop {hop})" if hop is not None else "")
            runs.setdefault(str(entry.get("run_id", "")), []).append(what)
    if head == issued:
        return None
    return StateLoss(database_outbox=issued, log_outbox=head, runs=runs)
