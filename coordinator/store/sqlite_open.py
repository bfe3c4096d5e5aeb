"""Opening the coordinator's state database: created private (0600), WAL journal, and a
schema version checked before anything reads it."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from baton.errors import StoreError
from coordinator.store.sqlite_rows import AUDIT_OUTBOX, SCHEMA_V1, SCHEMA_V2, SCHEMA_VERSION

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)


def open_database(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Opens (creating if missing) and checks the database; StoreError naming ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the state database ({exc.strerror})") from None
    else:
        os.close(fd)
    try:
        db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the state database ({exc})") from None
    try:
        db.row_factory = sqlite3.Row
        _prepare(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        if "readonly" in str(exc) or not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the state database is read-only ({exc})") from None
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from None
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Sets the pragmas, and creates the schema in a new file or checks its version."""
    db.execute("PRAGMA foreign_keys = ON")
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL journal mode (got {mode!r})")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == 0:
            (tables,) = db.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()
            if tables:
                raise StoreError(
                    f"{path}: database has {tables} table(s) but no Baton schema version; "
                    "it is not a coordinator state file"
                )
            _execute(db, SCHEMA_V1 + ";" + SCHEMA_V2)
            logger.info("created coordinator state database %s", path)
        elif version == 1:
            _execute(db, SCHEMA_V2)
            logger.info("upgraded coordinator state database %s to version 2", path)
        elif version != SCHEMA_VERSION:
            newer = " (written by a newer coordinator)" if version > SCHEMA_VERSION else ""
            raise StoreError(
                f"{path}: unknown state schema version {version}{newer}; "
                f"this coordinator reads version {SCHEMA_VERSION}"
            )
        db.execute(AUDIT_OUTBOX)
        # A real write, so a read-only file or file system is refused now, not at the
        # first state change after the coordinator said it was serving.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


def _execute(db: sqlite3.Connection, script: str) -> None:
    """Runs each statement of ``script`` inside the open transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def rollback(db: sqlite3.Connection) -> None:
    """Rolls back the open transaction, if any; a failure to do so is only logged."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("rollback failed")
