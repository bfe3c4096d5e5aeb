"""A state database that lost its WAL is caught against the audit log's head at start-up:
the coordinator refuses to start and says what is missing, unless told to accept it."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from baton.errors import StoreError
from baton.security.audit import verify_log
from baton.security.pki import load_private_key
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from tests.conftest import Pki, live_coordinator
from tests.integration.sites import create_request, plan, register


def _lose_the_wal(pki: Pki, state: Path) -> str:
    """Registers a site, then creates a run whose commits sit in the WAL alone; the
    database file is then put back without its WAL. Returns the lost run's id."""
    db = state / "coordinator.db"
    with live_coordinator(pki, state) as coord:
        register(coord, "site-a")
        with sqlite3.connect(db) as side:  # the registration is in the file itself
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(db, state / "without-wal.db")
        run_id = str(coord.admin().CreateRun(create_request(pki, plan(["site-a"]))).run.run_id)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.move(state / "without-wal.db", db)
    return run_id


def test_a_lost_wal_stops_the_start_with_what_is_missing(pki: Pki, tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_id = _lose_the_wal(pki, state)
    files = pki.files("coordinator")
    config = CoordinatorConfig(tls=files, listen="127.0.0.1:0", state_dir=state)
    with pytest.raises(StoreError) as err:
        CoordinatorServer(config, files.load())
    message = err.value.message
    assert message.startswith(f"the state database {state / 'coordinator.db'} lacks ")
    assert f"run {run_id} (run_created" in message
    assert "Its write-ahead log (coordinator.db-wal) was lost" in message
    assert message.endswith(
        "or start with --accept-state-loss to go on without them (the audit log keeps their record)"
    )
    # Refused before anything started: the state directory is free for the next try.
    CoordinatorServer(config, files.load(), accept_state_loss=True).stop(grace=0)


def test_accepted_state_loss_is_logged_and_the_log_goes_on(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    run_id = _lose_the_wal(pki, state)
    with (
        caplog.at_level(logging.ERROR),
        live_coordinator(pki, state, accept_state_loss=True) as coord,
    ):
        assert f"accepting state loss: the state database {state / 'coordinator.db'}" in (
            caplog.text
        )
        assert run_id in caplog.text
        new_run = coord.admin().CreateRun(create_request(pki, plan(["site-a"]))).run
        log = coord.server.audit.path
    # The new run's entry is in the log (not taken for one already written), the chain
    # verifies, and a later start needs no flag.
    assert f'"run_id":"{new_run.run_id}"' in log.read_text()
    key = load_private_key(pki.files("coordinator").key.read_bytes(), source="key")
    assert verify_log(log, public_key=key.public_key()).ok
    with live_coordinator(pki, state) as again:
        assert again.server.port > 0
