"""Fault policies: the pure decisions, and the engine carrying them out over the memory store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from baton.errors import ConfigError
from baton.plan_faults import FaultsSection
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.faults import Action, Fault, FaultFacts, decide
from coordinator.engine.leases import Deadlines, HopWatch, Leases
from coordinator.engine.runs import Scheduler
from coordinator.store.base import EventKind, HopState, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki
from tests.unit.coordinator.test_scheduler import WINE, finish_hop, signed

PLAN = """
[run]
name = "f"
sites = {sites}
cycles = 2

[model]
name = "logreg"

[task]
dataset = "wine"

[ordering]
strategy = "fixed"

[faults]
{faults}
"""
LEASE_S = 10.0


class Clock:
    """A settable clock (Unix ms)."""

    def __init__(self) -> None:
        self.t = 1_000_000

    def __call__(self) -> int:
        return self.t


def facts(**changes: object) -> FaultFacts:
    return replace(FaultFacts(hop_index=3, site_id="b", sites_remaining=3), **changes)  # type: ignore[arg-type]


# -- decisions ----------------------------------------------------------------------------


def test_defaults_wait_for_a_lost_site_and_fail_a_failed_hop() -> None:
    policy = FaultsSection()
    assert decide(policy, Fault.LOST, facts()).action is Action.WAIT
    failed = decide(policy, Fault.FAILED, facts())
    assert (failed.action, failed.reason) == (Action.ABORT, "hop 4 at b failed")


def test_retry_is_bounded() -> None:
    policy = FaultsSection(on_lost_site="retry", max_retries=2)
    assert (
        decide(policy, Fault.LOST, facts(retries=1)).reason == "hop 4 at b was lost; retry 2 of 2"
    )
    last = decide(policy, Fault.LOST, facts(retries=2))
    assert (last.action, last.reason) == (
        Action.ABORT,
        "hop 4 at b was lost after 2 retries (max_retries)",
    )


@pytest.mark.parametrize("action", ["skip", "reroute"])
def test_skip_and_reroute_within_their_limits(action: str) -> None:
    policy = FaultsSection(on_lost_site=action, max_skipped_per_cycle=1, min_sites=2)  # type: ignore[arg-type]
    assert decide(policy, Fault.LOST, facts()).action is Action(action)
    assert decide(policy, Fault.LOST, facts(skipped_this_cycle=1)).reason == (
        "hop 4 at b was lost and its cycle already lost 1 hops (max_skipped_per_cycle = 1)"
    )
    assert decide(policy, Fault.LOST, facts(sites_remaining=1)).reason == (
        "hop 4 at b was lost and only 1 sites remain (min_sites = 2)"
    )
    gone = decide(policy, Fault.LOST, facts(previous_site="a", previous_alive=False))
    assert gone.reason == (
        "hop 4 at b was lost and the previous site a is gone too: nobody can re-seal the last "
        "completed hop"
    )
    assert decide(policy, Fault.LOST, facts(hop_index=0, previous_alive=False)).action is Action(
        action
    )


def test_a_lost_reseal_ends_the_run_whatever_the_policy() -> None:
    policy = FaultsSection(on_lost_site="skip")
    got = decide(policy, Fault.LOST, facts(resealing=True))
    assert (got.action, got.reason) == (
        Action.ABORT,
        "hop 4 at b was lost while re-sealing its output for a new recipient",
    )


# -- the engine ---------------------------------------------------------------------------


def make(
    pki: Pki, sites: str, faults: str
) -> tuple[MemoryStore, MemoryBlobStore, Scheduler, Clock, str]:
    store, blobs, clock = MemoryStore(), MemoryBlobStore(), Clock()
    for s in sites:
        store.upsert_site(
            SiteRecord(site_id=s, certificate_pem="pem", profile=WINE, last_seen_ms=clock.t)
        )
    sched = Scheduler(store, blobs, ca_pem=pki.ca_pem, clock=clock, lease_seconds=LEASE_S)
    plan = PLAN.format(sites=list(sites), faults=faults).replace("'", '"')
    run = sched.create_run(*signed(pki, plan))
    return store, blobs, sched, clock, run.run_id


def watch(store: MemoryStore, sched: Scheduler, leases: Leases | None = None) -> HopWatch:
    return HopWatch(
        store,
        sched.journal,
        sched.recovery,
        sched.clocks,
        deadlines=Deadlines(pickup_seconds=60, progress_seconds=60, upload_seconds=60),
        interval_seconds=1,
        leases=leases,
    )


def beat(store: MemoryStore, clock: Clock, *sites: str) -> None:
    store.touch_sites(dict.fromkeys(sites, clock.t))


def faults_of(store: MemoryStore, run_id: str) -> list[str]:
    return [e.message for e in store.list_events(run_id) if e.kind is EventKind.FAULT]


@pytest.mark.parametrize("action", ["skip", "reroute"])
def test_a_lost_site_is_skipped_and_the_previous_hop_resealed_for_the_next(
    pki: Pki, action: str
) -> None:
    store, blobs, sched, clock, run_id = make(pki, "abc", f'on_lost_site = "{action}"')
    watcher = watch(store, sched)
    finish_hop(sched, blobs, run_id, 0, "a")  # hop 1 goes to b, who dies
    clock.t += int(LEASE_S * 1000) + 1
    beat(store, clock, "a", "c")
    assert watcher.check() == 1
    assert [(h.site_id, h.state) for h in store.list_hops(run_id)] == [
        ("a", HopState.ASSIGNED),  # offered again, to re-seal
        ("c", HopState.PENDING),
    ]
    assert store.get_run(run_id).total_hops == 5
    (reseal,) = sched.assignments.for_site("a", {(run_id, 0, 0)})
    assert (reseal.hop_index, reseal.next_hop and reseal.next_hop.site_id) == (0, "c")
    assert faults_of(store, run_id) == [
        f"{action}: hop 2 at b was lost; {action}: no heartbeat for 10 s (lease expired)",
        "reseal: hop 1 at a seals its output again for c",
    ]
    resealed = finish_hop(sched, blobs, run_id, 0, "a")
    assert store.get_hop(run_id, 1).input == resealed
    for _ in range(20):  # b stays dead: cycle 1 loses its hop too
        if store.get_run(run_id).state is not RunState.RUNNING:
            break
        (hop,) = [h for h in store.list_hops(run_id) if h.state is HopState.ASSIGNED]
        if hop.site_id == "b":
            clock.t += int(LEASE_S * 1000) + 1
            beat(store, clock, "a", "c")
            assert watcher.check() == 1
        else:
            finish_hop(sched, blobs, run_id, hop.hop_index, hop.site_id)
    run = store.get_run(run_id)
    assert run.state is RunState.SUCCEEDED, run.error
    assert [h.site_id for h in store.list_hops(run_id)] == ["a", "c", "a", "c"]
    skipped = [m for m in faults_of(store, run_id) if m.startswith(action)]
    assert [m.split(";")[0] for m in skipped] == [
        f"{action}: hop 2 at b was lost",
        f"{action}: hop 4 at b was lost",
    ]


def test_wait_warns_once_per_absence_with_the_time_last_seen(pki: Pki) -> None:
    store, blobs, sched, clock, run_id = make(pki, "ab", "")
    watcher = watch(store, sched)
    finish_hop(sched, blobs, run_id, 0, "a")
    clock.t += int(LEASE_S * 1000) + 1
    assert watcher.check() == 1
    assert watcher.check() == 0  # one warning per absence
    (warning,) = faults_of(store, run_id)
    assert warning.startswith("wait: site b offline since 1970-01-01 00:16:40 UTC; hop 2 at b")
    assert store.get_hop(run_id, 1).state is HopState.ASSIGNED
    assert store.get_run(run_id).state is RunState.RUNNING


def test_retry_reoffers_the_hop_then_fails_the_run_with_the_reason(pki: Pki) -> None:
    store, _blobs, sched, clock, run_id = make(pki, "ab", 'on_lost_site = "retry"\nmax_retries = 2')
    watcher = watch(store, sched)
    sent: set[tuple[str, int, int]] = set()
    assert [a.hop_index for a in sched.assignments.for_site("a", sent)] == [0]
    for _ in range(3):
        clock.t += int(LEASE_S * 1000) + 1
        watcher.check()
        offered = [a.hop_index for a in sched.assignments.for_site("a", sent)]
        if store.get_run(run_id).state is RunState.RUNNING:
            assert offered == [0]  # the same stream gets the hop again
    run = store.get_run(run_id)
    assert (run.state, run.error) == (
        RunState.FAILED,
        "hop 1 at a was lost after 2 retries (max_retries): no heartbeat for 10 s (lease expired)",
    )


def test_a_failed_hop_is_skipped_and_min_sites_aborts(pki: Pki) -> None:
    store, _blobs, sched, clock, run_id = make(pki, "abc", 'on_failed_hop = "skip"\nmin_sites = 2')
    sched.fail_hop("a", run_id, 0, reason="data_error", message="bad rows")
    hop0 = store.get_hop(run_id, 0)
    assert (hop0.site_id, hop0.state, hop0.input) == ("b", HopState.ASSIGNED, None)
    clock.t += int(LEASE_S * 1000) + 1
    beat(store, clock, "b")  # a and c are offline now
    sched.fail_hop("b", run_id, 0, reason="model_error", message="nan")
    run = store.get_run(run_id)
    assert (run.state, run.error) == (
        RunState.FAILED,
        "hop 1 at b failed and only 0 sites remain (min_sites = 2): model_error: nan",
    )


def test_a_run_naming_an_offline_site_is_warned_about_or_refused(pki: Pki) -> None:
    store, _, _, _, run_id = make(pki, "ab", "")
    assert faults_of(store, run_id) == []
    store, blobs, clock = MemoryStore(), MemoryBlobStore(), Clock()
    store.upsert_site(
        SiteRecord(site_id="a", certificate_pem="pem", profile=WINE, last_seen_ms=clock.t)
    )
    store.upsert_site(SiteRecord(site_id="b", certificate_pem="pem", profile=WINE, last_seen_ms=1))
    sched = Scheduler(store, blobs, ca_pem=pki.ca_pem, clock=clock, lease_seconds=LEASE_S)
    plan = PLAN.format(sites='["a", "b"]', faults="")
    run = sched.create_run(*signed(pki, plan))
    assert faults_of(store, run.run_id) == ["warning: sites offline or revoked at creation: b"]
    with pytest.raises(ConfigError, match=r"offline or revoked: b \(\[faults\] require_online\)"):
        sched.create_run(
            *signed(pki, PLAN.format(sites='["a", "b"]', faults="require_online = true"))
        )


def test_a_hop_that_moved_on_since_the_scan_is_left_alone(pki: Pki) -> None:
    store, blobs, sched, _, run_id = make(pki, "ab", 'on_lost_site = "retry"')
    finish_hop(sched, blobs, run_id, 0, "a")  # completed after the watch saw it assigned
    with sched.journal.transaction():
        assert sched.recovery.handle(run_id, 0, Fault.LOST, site_id="a") is None
        assert sched.recovery.handle(run_id, 1, Fault.LOST, site_id="a") is None  # b's now
    assert [h.state for h in store.list_hops(run_id)][:2] == [HopState.COMPLETED, HopState.ASSIGNED]
    assert faults_of(store, run_id) == []
