"""``SqliteStore``: the coordinator's durable state in one SQLite file (WAL)."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from baton.errors import ConflictError, StoreError
from coordinator.store.base import (
    EventKind,
    EventRecord,
    HopRecord,
    HopState,
    PendingAudit,
    RunRecord,
    RunState,
    SiteRecord,
)
from coordinator.store.disk_full import store_error
from coordinator.store.kill_hook import after_commit
from coordinator.store.rules import (
    as_floats,
    check_hop_transition,
    check_new_hops,
    check_reopen,
    check_run_update,
)
from coordinator.store.sqlite_open import open_database, rollback
from coordinator.store.sqlite_rows import (
    INSERT_HOP,
    INSERT_RUN,
    INSERT_SITE,
    event_from_row,
    get_hop_row,
    get_run_row,
    get_site_row,
    hop_from_row,
    hop_params,
    metrics_json,
    put_hop_row,
    replan_rows,
    run_from_row,
    run_params,
    site_from_row,
    site_params,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from baton.domain import BlobRef


class SqliteStore:
    """``Store`` in a SQLite file: WAL journal, ``synchronous=NORMAL``, foreign keys on.

    Concurrency: ONE connection (``check_same_thread=False``) guarded by a lock. SQLite
    serializes writers anyway, and the coordinator's load is a few statements per hop, so
    a per-thread pool would buy nothing; one connection makes every method a single
    transaction under the lock (``BEGIN IMMEDIATE`` for writes) and lets ``close()``
    release everything deterministically. A busy timeout covers other processes (an
    operator's read-only inspection) holding the file.

    Durability: in WAL mode ``synchronous=NORMAL`` keeps every committed transaction
    across a process crash; a power loss may drop the newest commits but never corrupts
    the file.

    Constraints: the contract of ``coordinator.store.base.Store`` and the additions
    listed on ``MemoryStore`` (both pass the same contract suite). Also:
    - Opening MUST fail with ``StoreError`` naming the path if the file cannot be opened
      or created, is not a SQLite database, holds tables but no Baton schema version, or
      has a schema version other than ``SCHEMA_VERSION``.
    - Every SQLite error is re-raised as ``StoreError``; a failed method changes nothing.

    Args:
        path: The database file; created (mode 0600) with the schema if it is missing.
            Its directory must exist.
        busy_timeout_s: How long to wait for a lock held by another process.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._depth = 0  # > 0 while the lock's holder is inside ``atomic()``
        self._conn: sqlite3.Connection | None = open_database(path, busy_timeout_s)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- sites ------------------------------------------------------------------------

    def upsert_site(self, site: SiteRecord) -> None:
        """Inserts or replaces a site's registration."""
        with self._tx(write=True) as db:
            db.execute(INSERT_SITE, site_params(site))

    def touch_sites(self, seen: dict[str, int]) -> None:
        """Records heartbeats (site id: ``last_seen_ms``, never moved back) in one
        transaction; sites never registered are skipped."""
        with self._tx(write=True) as db:
            db.executemany(
                "UPDATE sites SET last_seen_ms = MAX(last_seen_ms, ?) WHERE site_id = ?",
                [(ms, site_id) for site_id, ms in seen.items()],
            )

    def get_site(self, site_id: str) -> SiteRecord:
        """Returns one site."""
        with self._tx() as db:
            return get_site_row(db, site_id)

    def list_sites(self) -> list[SiteRecord]:
        """Returns every site, ordered by id."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM sites ORDER BY site_id").fetchall()
            return [site_from_row(r) for r in rows]

    # -- runs -------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Records a new run."""
        with self._tx(write=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone():
                raise ConflictError(f"run {run.run_id!r} already exists", run_id=run.run_id)
            db.execute(INSERT_RUN, run_params(run))

    def get_run(self, run_id: str) -> RunRecord:
        """Returns one run."""
        with self._tx() as db:
            return get_run_row(db, run_id)

    def list_runs(self) -> list[RunRecord]:
        """Returns every run, newest first (``created_ms`` descending, then id ascending)."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_ms DESC, run_id ASC").fetchall()
            return [run_from_row(r) for r in rows]

    def update_run(
        self,
        run_id: str,
        *,
        state: RunState,
        error: str = "",
        result: BlobRef | None = None,
    ) -> RunRecord:
        """Moves a RUNNING run to the terminal ``state``; returns the updated record."""
        with self._tx(write=True) as db:
            run = get_run_row(db, run_id)
            check_run_update(run, state)
            updated = replace(run, state=RunState(state), error=error, result=result)
            params = run_params(updated)
            db.execute(
                "UPDATE runs SET state = :state, error = :error, result_blob_id = :result_blob_id,"
                " result_size = :result_size WHERE run_id = :run_id",
                params,
            )
            return updated

    # -- hops -------------------------------------------------------------------------

    def add_hops(self, run_id: str, hops: list[HopRecord]) -> None:
        """Appends planned hops (PENDING) to a run, at contiguous indices."""
        with self._tx(write=True) as db:
            get_run_row(db, run_id)
            (existing,) = db.execute(
                "SELECT COUNT(*) FROM hops WHERE run_id = ?", (run_id,)
            ).fetchone()
            check_new_hops(run_id, existing, hops)
            db.executemany(
                INSERT_HOP, [hop_params(replace(h, state=HopState.PENDING)) for h in hops]
            )

    def get_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """Returns one hop."""
        with self._tx() as db:
            return get_hop_row(db, run_id, hop_index)

    def list_hops(self, run_id: str) -> list[HopRecord]:
        """Returns a run's hops by index."""
        with self._tx() as db:
            get_run_row(db, run_id)
            rows = db.execute(
                "SELECT * FROM hops WHERE run_id = ? ORDER BY hop_index", (run_id,)
            ).fetchall()
            return [hop_from_row(r) for r in rows]

    def assign_hop(self, run_id: str, hop_index: int, *, input: BlobRef | None) -> HopRecord:
        """PENDING -> ASSIGNED, recording the input blob."""
        with self._tx(write=True) as db:
            hop = get_hop_row(db, run_id, hop_index)
            check_hop_transition(hop, HopState.ASSIGNED)
            return put_hop_row(db, replace(hop, state=HopState.ASSIGNED, input=input))

    def complete_hop(
        self,
        run_id: str,
        hop_index: int,
        *,
        output: BlobRef,
        metrics_before: dict[str, float],
        metrics_after: dict[str, float],
        num_examples: int,
        train_seconds: float,
        output_manifest: bytes = b"",
    ) -> HopRecord:
        """ASSIGNED -> COMPLETED with the hop's output, its manifest and metrics."""
        with self._tx(write=True) as db:
            hop = get_hop_row(db, run_id, hop_index)
            check_hop_transition(hop, HopState.COMPLETED)
            done = replace(
                hop,
                state=HopState.COMPLETED,
                output=output,
                metrics_before=as_floats(metrics_before),
                metrics_after=as_floats(metrics_after),
                num_examples=num_examples,
                train_seconds=float(train_seconds),
                output_manifest=bytes(output_manifest),
            )
            return put_hop_row(db, done)

    def fail_hop(self, run_id: str, hop_index: int, *, error: str) -> HopRecord:
        """PENDING or ASSIGNED -> FAILED."""
        with self._tx(write=True) as db:
            hop = get_hop_row(db, run_id, hop_index)
            check_hop_transition(hop, HopState.FAILED)
            return put_hop_row(db, replace(hop, state=HopState.FAILED, error=error))

    def reopen_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """ASSIGNED|COMPLETED|FAILED -> ASSIGNED, keeping input and output."""
        with self._tx(write=True) as db:
            hop = get_hop_row(db, run_id, hop_index)
            check_reopen(hop)
            return put_hop_row(db, replace(hop, state=HopState.ASSIGNED, error=""))

    def replan_hops(
        self, run_id: str, from_index: int, hops: list[HopRecord], *, total_hops: int
    ) -> None:
        """Replaces the hops from ``from_index`` on and sets ``total_hops``."""
        with self._tx(write=True) as db:
            replan_rows(db, run_id, from_index, hops, total_hops=total_hops)

    def assigned_hops_for_site(self, site_id: str) -> list[HopRecord]:
        """ASSIGNED hops of RUNNING runs for one site, oldest run first, then by index."""
        with self._tx() as db:
            get_site_row(db, site_id)
            rows = db.execute(
                "SELECT h.* FROM hops h JOIN runs r ON r.run_id = h.run_id "
                "WHERE h.site_id = ? AND h.state = ? AND r.state = ? "
                "ORDER BY r.created_ms, r.run_id, h.hop_index",
                (site_id, HopState.ASSIGNED.value, RunState.RUNNING.value),
            ).fetchall()
            return [hop_from_row(r) for r in rows]

    # -- events -----------------------------------------------------------------------

    def append_event(
        self,
        run_id: str,
        kind: EventKind,
        *,
        time_ms: int,
        hop_index: int = 0,
        site_id: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> EventRecord:
        """Appends an event with the run's next sequence number (1, 2, 3, ...)."""
        with self._tx(write=True) as db:
            get_run_row(db, run_id)
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
            event = EventRecord(
                run_id=run_id,
                seq=seq,
                kind=EventKind(kind),
                time_ms=time_ms,
                hop_index=hop_index,
                site_id=site_id,
                message=message,
                metrics=as_floats(metrics or {}),
            )
            db.execute(
                "INSERT INTO events (run_id, seq, kind, time_ms, hop_index, site_id, message,"
                " metrics_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    event.kind.value,
                    time_ms,
                    hop_index,
                    site_id,
                    message,
                    metrics_json(event.metrics),
                ),
            )
            return replace(event, metrics=dict(event.metrics))

    def list_events(self, run_id: str, *, after_seq: int = 0) -> list[EventRecord]:
        """Returns a run's events with ``seq > after_seq``, in order."""
        with self._tx() as db:
            get_run_row(db, run_id)
            rows = db.execute(
                "SELECT * FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
            return [event_from_row(r) for r in rows]

    # -- atomic blocks and the audit outbox ----------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``) for the whole block; methods called
        inside it join it; committed when the block ends, rolled back if it raises."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self._tx(write=True):
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0

    def queue_audit(self, entry: PendingAudit) -> int:
        """Stores an audit entry for the signed log; returns its ``outbox_id``."""
        with self._tx(write=True) as db:
            cur = db.execute(
                "INSERT INTO audit_outbox (event, run_id, hop, detail_json) VALUES (?, ?, ?, ?)",
                (entry.event, entry.run_id, entry.hop, json.dumps(entry.detail, sort_keys=True)),
            )
            return int(cur.lastrowid or 0)

    def pending_audit(self) -> list[PendingAudit]:
        """Audit entries queued and not yet cleared, oldest first."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM audit_outbox ORDER BY outbox_id").fetchall()
            return [
                PendingAudit(
                    outbox_id=r["outbox_id"],
                    event=r["event"],
                    run_id=r["run_id"],
                    hop=r["hop"],
                    detail={str(k): str(v) for k, v in json.loads(r["detail_json"]).items()},
                )
                for r in rows
            ]

    def clear_audit(self, outbox_id: int) -> None:
        """Forgets a queued audit entry; unknown ids are ignored."""
        with self._tx(write=True) as db:
            db.execute("DELETE FROM audit_outbox WHERE outbox_id = ?", (outbox_id,))

    def close(self) -> None:
        """Closes the connection; every later call raises ``StoreError``. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals --------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed on success, rolled back on any error."""
        with self._lock:
            if (db := self._conn) is None:
                raise StoreError(f"{self._path}: the state store is closed")
            if self._depth:  # inside atomic(): join its transaction
                try:
                    yield db
                except sqlite3.Error as exc:
                    raise store_error(self._path, exc) from exc
                return
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: cannot begin a transaction: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
                after_commit(write)  # a test-only crash point; off unless its variable is set
            except sqlite3.Error as exc:
                rollback(db)
                raise store_error(self._path, exc) from exc
            except BaseException:
                rollback(db)
                raise
