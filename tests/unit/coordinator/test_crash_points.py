"""Crash consistency, write by write: a 3-site, 2-cycle run over real SQLite and a real
signed audit log is cut at every write statement in turn (the transaction in progress is
lost, as a kill -9 would lose it), restarted, and driven on. Every restart comes up, the
run completes, its events have no gap, and the audit log holds each hop exactly once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from baton.errors import BatonError
from baton.security.audit import AuditLog, verify_log
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.runs import Scheduler
from coordinator.store.base import RunState, SiteRecord
from coordinator.store.sqlite import SqliteStore
from tests.conftest import Pki
from tests.unit.coordinator.test_scheduler import PLAN, WINE, Clock, signed

PARTY = "spiffe://test.example/site/site-a"
WRITES = ("INSERT", "UPDATE", "DELETE", "COMMIT")


class Killed(Exception):
    """The process died at this statement."""


class Fuse:
    """Counts write statements; the ``at``-th one kills the process (0: never)."""

    def __init__(self, at: int) -> None:
        self.at, self.count = at, 0

    def check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(WRITES):
            self.count += 1
            if self.count == self.at:
                raise Killed(sql.split()[0])


class FusedConnection:
    """A sqlite3 connection whose write statements go through a fuse."""

    def __init__(self, conn: sqlite3.Connection, fuse: Fuse) -> None:
        self._conn, self._fuse = conn, fuse

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._fuse.check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._fuse.check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@dataclass
class Coordinator:
    """One coordinator process's worth of state over files that outlive it."""

    root: Path
    pki: Pki
    fuse: Fuse
    blobs: MemoryBlobStore = field(default_factory=MemoryBlobStore)
    restarts: int = 0
    refusals: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.store = SqliteStore(self.root / "c.db")
        self.store._conn = FusedConnection(self.store._conn, self.fuse)  # type: ignore[arg-type, assignment]
        key = self.pki.keys("site-a").signing_key
        self.audit = AuditLog(self.root / "audit.jsonl", party=PARTY, signing_key=key)
        self.sched = Scheduler(
            self.store, self.blobs, ca_pem=self.pki.ca_pem, audit=self.audit, clock=Clock()
        )
        self.sched.recover()

    def restart(self) -> None:
        self.store.close()
        self.audit.close()
        self.restarts += 1
        self.start()

    def act(self, step: Any) -> Any:
        """Runs ``step`` (a site's or admin's call); a kill restarts the coordinator, and
        the caller, seeing its call fail, tries again, as sites and the CLI do."""
        for _ in range(5):
            try:
                return step()
            except Killed:
                self.restart()
            except BatonError as exc:
                self.refusals.append(exc.message)
                return None  # refused after the restart: the call had taken effect
        raise AssertionError("a call kept failing")


def complete(c: Coordinator, run_id: str, attempt: list[int]) -> bool:
    """Completes the hop in flight, if any; returns whether one was."""
    for site in "abc":
        for hop in c.act(lambda site=site: c.store.assigned_hops_for_site(site)):
            attempt[0] += 1
            data = f"{run_id}/{hop.hop_index}".encode()
            transfer = f"t{attempt[0]}"
            c.blobs.append(transfer, 0, data)
            ref = c.blobs.finish(
                transfer, expected_sha256=hashlib.sha256(data).hexdigest(), expected_size=len(data)
            )
            c.act(  # the scheduler of whichever process is up by then
                lambda site=site, index=hop.hop_index, ref=ref: c.sched.complete_hop(
                    site,
                    run_id,
                    index,
                    output=ref,
                    output_manifest=b"m",
                    metrics_before={"accuracy": 0.1},
                    metrics_after={"accuracy": 0.2},
                    num_examples=5,
                    train_seconds=0.01,
                )
            )
            return True
    return False


def drive(root: Path, pki: Pki, at: int) -> Coordinator:
    """Registers three sites, runs a 6-hop run to its end, killing at write ``at``."""
    c = Coordinator(root, pki, Fuse(at))
    c.act(lambda: c.start())
    for s in "abc":
        c.act(
            lambda s=s: c.store.upsert_site(
                SiteRecord(site_id=s, certificate_pem="p", profile=WINE)
            )
        )
    plan = signed(pki, PLAN.format(seed=1, strategy="fixed"))
    # The owner, not hearing back, looks before submitting again (the kill may have taken
    # only the reply).
    run = c.act(lambda: next(iter(c.store.list_runs()), None) or c.sched.create_run(*plan))
    attempt = [0]
    while c.act(lambda: c.store.get_run(run.run_id)).state is RunState.RUNNING:
        assert attempt[0] < 20, f"the run does not progress: {c.refusals[-3:]}"
        assert complete(c, run.run_id, attempt), "a running run with no hop in flight"
    return c


def writes_of_a_clean_run(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> int:
    c = drive(tmp_path_factory.mktemp("clean"), pki, 0)
    return c.fuse.count


@pytest.fixture(scope="module")
def clean_writes(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> int:
    return writes_of_a_clean_run(tmp_path_factory, pki)


@pytest.mark.parametrize("at", range(1, 98, 2))
def test_a_kill_at_any_write_loses_nothing(
    tmp_path: Path, pki: Pki, clean_writes: int, at: int
) -> None:
    if at > clean_writes:
        pytest.skip(f"a clean run makes only {clean_writes} writes")
    c = drive(tmp_path, pki, at)
    assert c.restarts == 1
    (run,) = c.store.list_runs()
    assert run.state is RunState.SUCCEEDED
    events = c.store.list_events(run.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.hop_index for e in events if e.kind.value == "hop_completed"] == list(range(6))
    key = pki.keys("site-a").signing_key.public_key()
    assert verify_log(c.audit.path, public_key=key).ok
    entries = [json.loads(line) for line in c.audit.path.read_text().splitlines()]
    completed = [e["hop"] for e in entries if e["event"] == "hop_completed"]
    assert completed == list(range(6))
    assert [e["event"] for e in entries].count("run_created") == 1
    assert [e["event"] for e in entries][-1] == "run_succeeded"
    assert c.store.pending_audit() == []
