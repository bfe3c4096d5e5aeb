"""What only a real SQLite file shows: restarts, WAL, file modes, foreign files."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from baton.errors import StoreError
from coordinator.store.base import EventKind, RunState
from coordinator.store.sqlite import SqliteStore
from coordinator.store.sqlite_rows import INSERT_RUN, SCHEMA_V1, run_params
from tests.unit.coordinator.test_store_contract import (
    BLOB_A,
    BLOB_B,
    _complete,
    _hops,
    _in_threads,
    _run,
    _site,
)

if TYPE_CHECKING:
    from pathlib import Path


class TestSqliteStoreFile:
    """SqliteStore beyond the shared contract."""

    def test_data_survives_a_restart(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        store = SqliteStore(path)
        store.upsert_site(_site())
        store.create_run(_run(result=None))
        store.create_run(_run("done", created_ms=5))
        store.update_run("done", state=RunState.SUCCEEDED, result=BLOB_A)
        store.add_hops("run-1", _hops("run-1", 0, 3))
        store.assign_hop("run-1", 0, input=None)
        _complete(store, "run-1", 0)
        store.assign_hop("run-1", 1, input=BLOB_B)
        store.append_event("run-1", EventKind.RUN_CREATED, time_ms=1, metrics={"x": 0.1})
        state = (store.list_sites(), store.list_runs(), store.list_hops("run-1"))
        events = store.list_events("run-1")
        store.close()

        reopened = SqliteStore(path)
        try:
            assert (reopened.list_sites(), reopened.list_runs(), reopened.list_hops("run-1")) == (
                state
            )
            assert reopened.list_events("run-1") == events
            assert reopened.append_event("run-1", EventKind.HOP_PROGRESS, time_ms=2).seq == 2
            assert [h.run_id for h in reopened.assigned_hops_for_site("mercy")] == ["run-1"]
        finally:
            reopened.close()

    def test_file_is_wal_private_and_versioned(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        SqliteStore(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA user_version").fetchone() == (2,)

    def test_a_version_1_file_is_upgraded_and_keeps_its_runs(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        with closing(sqlite3.connect(path)) as db:
            db.executescript(SCHEMA_V1)
            db.execute(
                INSERT_RUN.replace(", start_blob_id,\n    start_size, start_manifest", "").replace(
                    ", :start_blob_id,\n    :start_size, :start_manifest", ""
                ),
                {k: v for k, v in run_params(_run()).items() if not k.startswith("start")},
            )
            db.execute("PRAGMA user_version = 1")
            db.commit()
        store = SqliteStore(path)
        try:
            assert store.get_run("run-1") == _run()
            store.create_run(_run("run-2", start_model=BLOB_A, start_manifest=b"m"))
            assert store.get_run("run-2").start_model == BLOB_A
        finally:
            store.close()
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (2,)

    def test_two_stores_on_one_file_still_number_events_without_gaps(self, tmp_path: Path) -> None:
        # As two processes would: separate connections, serialized by SQLite's own lock.
        path = tmp_path / "state.db"
        stores = [SqliteStore(path), SqliteStore(path)]
        try:
            stores[0].create_run(_run())

            def work(store: SqliteStore) -> None:
                for i in range(50):
                    store.append_event("run-1", EventKind.HOP_PROGRESS, time_ms=i)

            _in_threads(lambda t: work(stores[t % 2]), 8)
            assert [e.seq for e in stores[1].list_events("run-1")] == list(range(1, 401))
        finally:
            for store in stores:
                store.close()

    def test_a_non_database_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.db"
        path.write_bytes(b"these are not the tables you are looking for\n" * 100)
        with pytest.raises(StoreError) as info:
            SqliteStore(path)
        assert str(path) in str(info.value)
        assert path.read_bytes().startswith(b"these are not")

    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        SqliteStore(path).close()
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 7")
        with pytest.raises(StoreError, match="version 7") as info:
            SqliteStore(path)
        assert str(path) in str(info.value)

    def test_a_foreign_database_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "other.db"
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE patients (id INTEGER)")
            db.commit()
        with pytest.raises(StoreError, match="no Baton schema version"):
            SqliteStore(path)
        with closing(sqlite3.connect(path)) as db:
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == [("patients",)]

    @pytest.mark.parametrize("where", ["missing-dir/state.db", "."])
    def test_an_unopenable_path_names_the_path(self, tmp_path: Path, where: str) -> None:
        path = tmp_path / where
        with pytest.raises(StoreError) as info:
            SqliteStore(path)
        assert str(path) in str(info.value)
