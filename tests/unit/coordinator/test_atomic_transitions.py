"""Crash consistency of the run engine over real SQLite: a transition cut short by a crash
(an exception raised inside its transaction) keeps nothing; the audit log is written from
the store's outbox, never twice; ``recover()`` fails what it cannot resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from baton.errors import AuditError, ConfigError
from baton.security.audit import AuditLog, verify_log
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.runs import Scheduler
from coordinator.store.base import EventKind, HopState, PendingAudit, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore
from tests.conftest import Pki
from tests.unit.coordinator.test_scheduler import PLAN, WINE, Clock, finish_hop, signed

PARTY = "spiffe://test.example/site/site-a"


class Crash(Exception):
    """Stands for a kill -9 at one write: nothing after it runs."""


def crash_on(store: SqliteStore, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the store's ``method`` raise, as a process killed at that write would stop."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise Crash(method)

    monkeypatch.setattr(store, method, boom)


@pytest.fixture
def world(pki: Pki, tmp_path: Path) -> tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog]:
    store, blobs = SqliteStore(tmp_path / "c.db"), MemoryBlobStore()
    for s in "abc":
        store.upsert_site(SiteRecord(site_id=s, certificate_pem="pem", profile=WINE))
    key = pki.keys("site-a").signing_key
    audit = AuditLog(tmp_path / "audit.jsonl", party=PARTY, signing_key=key)
    sched = Scheduler(store, blobs, ca_pem=pki.ca_pem, audit=audit, clock=Clock())
    return store, blobs, sched, audit


def snapshot(store: SqliteStore, run_id: str) -> tuple[object, ...]:
    return (store.get_run(run_id), store.list_hops(run_id), store.list_events(run_id))


def audit_events(audit: AuditLog) -> list[str]:
    return [json.loads(line)["event"] for line in audit.path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("action", "method"),
    [
        ("fail", "update_run"),
        ("fail", "append_event"),
        ("cancel", "update_run"),
        ("complete", "assign_hop"),
        ("complete", "append_event"),
        ("complete", "queue_audit"),
    ],
)
def test_a_crash_inside_a_transition_keeps_none_of_it(
    pki: Pki,
    world: tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog],
    monkeypatch: pytest.MonkeyPatch,
    action: str,
    method: str,
) -> None:
    store, blobs, sched, audit = world
    run = sched.create_run(*signed(pki, PLAN.format(seed=1, strategy="fixed")))
    before, logged = snapshot(store, run.run_id), audit_events(audit)
    with monkeypatch.context() as m:
        crash_on(store, method, m)
        transitions: dict[str, Callable[[], object]] = {
            "fail": lambda: sched.fail_hop(
                "a", run.run_id, 0, reason="training_error", message="x"
            ),
            "cancel": lambda: sched.cancel_run(run.run_id, "stop"),
            "complete": lambda: finish_hop(sched, blobs, run.run_id, 0, "a"),
        }
        transition = transitions[action]
        with pytest.raises(Crash):
            transition()
    assert snapshot(store, run.run_id) == before
    assert audit_events(audit) == logged
    sched.recover()  # the restart: resumes the run where it was
    assert store.get_run(run.run_id).state is RunState.RUNNING
    finish_hop(sched, blobs, run.run_id, 0, "a")
    assert [h.state for h in store.list_hops(run.run_id)][:2] == [
        HopState.COMPLETED,
        HopState.ASSIGNED,
    ]


def test_recover_fails_a_running_run_with_a_failed_hop_instead_of_refusing_to_start(
    pki: Pki, world: tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog]
) -> None:
    store, _, sched, _ = world
    run = sched.create_run(*signed(pki, PLAN.format(seed=1, strategy="fixed")))
    # What an older coordinator left behind when killed between its two transactions.
    store.fail_hop(run.run_id, 0, error="training_error: x")
    sched.recover()
    got = store.get_run(run.run_id)
    assert (got.state, got.error) == (RunState.FAILED, "hop 1 at a failed: training_error: x")
    assert store.list_events(run.run_id)[-1].kind is EventKind.RUN_FAILED


def test_recover_fails_a_run_whose_plan_cannot_be_planned(
    pki: Pki, world: tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog]
) -> None:
    store, blobs, sched, audit = world
    run = sched.create_run(*signed(pki, PLAN.format(seed=1, strategy="fixed")))
    finish_hop(sched, blobs, run.run_id, 0, "a")
    finish_hop(sched, blobs, run.run_id, 1, "b")  # cycle 1 gets planned with hop 2
    with store.atomic():  # an older coordinator stored a plan it cannot plan from
        store._conn.execute(  # type: ignore[union-attr]
            "UPDATE runs SET plan_toml = ? WHERE run_id = ?",
            (run.plan_toml.replace('"fixed"', '"fixed"\noptions = { typo = 1 }'), run.run_id),
        )
        store._conn.execute("DELETE FROM hops WHERE run_id = ? AND hop_index >= 3", (run.run_id,))  # type: ignore[union-attr]
    sched.recover()
    got = store.get_run(run.run_id)
    assert got.state is RunState.FAILED
    assert got.error.startswith("cannot resume after a restart: ordering strategy 'fixed'")
    assert audit_events(audit)[-1] == "run_failed"


def test_a_plan_with_a_bad_strategy_option_is_refused_before_anything_is_stored(
    pki: Pki, world: tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog]
) -> None:
    store, _, sched, audit = world
    plan = PLAN.format(seed=1, strategy="fixed") + "options = { typo = 1 }\n"
    with pytest.raises(ConfigError, match="does not accept option"):
        sched.create_run(*signed(pki, plan))
    assert store.list_runs() == []
    assert audit_events(audit) == []
    sched.recover()


def test_audit_entries_kept_from_a_full_log_are_written_later_exactly_once(
    pki: Pki, world: tuple[SqliteStore, MemoryBlobStore, Scheduler, AuditLog], tmp_path: Path
) -> None:
    store, _, sched, audit = world
    real_append = audit.append
    calls = {"n": 0}

    def full(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise AuditError("cannot append to audit log: No space left on device")

    audit.append = full  # type: ignore[method-assign]
    run = sched.create_run(*signed(pki, PLAN.format(seed=1, strategy="fixed")))
    assert calls["n"] == 1  # tried, failed, kept
    assert [p.event for p in store.pending_audit()] == ["run_created"]
    assert store.get_run(run.run_id).state is RunState.RUNNING  # the state change stands
    audit.append = real_append  # type: ignore[method-assign]
    sched.cancel_run(run.run_id, "stop")  # the next transaction writes both, in order
    assert audit_events(audit) == ["run_created", "run_cancelled"]
    assert store.pending_audit() == []
    # A crash after the log took an entry but before the outbox forgot it: a restart
    # must not write it twice.
    store.queue_audit(PendingAudit(event="run_cancelled", run_id=run.run_id))
    outbox_id = store.pending_audit()[0].outbox_id
    real_append("run_cancelled", run_id=run.run_id, detail={"outbox": str(outbox_id)})
    audit.close()
    reopened = AuditLog(audit.path, party=PARTY, signing_key=pki.keys("site-a").signing_key)
    Scheduler(store, MemoryBlobStore(), ca_pem=pki.ca_pem, audit=reopened).recover()
    assert audit_events(reopened) == ["run_created", "run_cancelled", "run_cancelled"]
    assert store.pending_audit() == []
    assert verify_log(audit.path, public_key=pki.keys("site-a").signing_key.public_key()).ok


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_atomic_block_keeps_all_or_nothing(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.db")
    store.upsert_site(SiteRecord(site_id="a", certificate_pem="pem"))

    def cut_short() -> None:
        with store.atomic():
            store.upsert_site(SiteRecord(site_id="b", certificate_pem="pem"))
            with store.atomic():  # nested blocks join the outer one
                store.queue_audit(PendingAudit(event="site_registered"))
            raise Crash

    with pytest.raises(Crash):
        cut_short()
    assert ([s.site_id for s in store.list_sites()], store.pending_audit()) == (["a"], [])
    with store.atomic():
        store.upsert_site(SiteRecord(site_id="b", certificate_pem="pem"))
        store.queue_audit(PendingAudit(event="site_registered", detail={"site": "b"}))
    assert [s.site_id for s in store.list_sites()] == ["a", "b"]
    (pending,) = store.pending_audit()
    assert (pending.event, pending.detail) == ("site_registered", {"site": "b"})
    store.clear_audit(pending.outbox_id)
    assert store.pending_audit() == []
