"""A recipient with a revoked certificate: its hop is held back from the sender's stream and
the run's fault policy meets it once (wait warns once, skip replaces it, the limits abort)."""

from __future__ import annotations

import pytest

from baton.plan_faults import FaultsSection
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.faults import Action, Fault, FaultFacts, decide
from coordinator.engine.runs import Scheduler
from coordinator.store.base import HopState, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki
from tests.unit.coordinator.test_faults import LEASE_S, PLAN, Clock, faults_of, watch
from tests.unit.coordinator.test_scheduler import WINE, finish_hop, signed


def make(
    pki: Pki, sites: str, faults: str, revoked: set[bytes]
) -> tuple[MemoryStore, MemoryBlobStore, Scheduler, str]:
    store, blobs, clock = MemoryStore(), MemoryBlobStore(), Clock()
    for s in sites:
        store.upsert_site(
            SiteRecord(site_id=s, certificate_pem=f"tls-{s}", profile=WINE, last_seen_ms=clock.t)
        )
    sched = Scheduler(
        store,
        blobs,
        ca_pem=pki.ca_pem,
        clock=clock,
        lease_seconds=LEASE_S,
        revoked=revoked.__contains__,
    )
    plan = PLAN.format(sites=list(sites), faults=faults).replace("'", '"')
    return store, blobs, sched, sched.create_run(*signed(pki, plan)).run_id


def decisions(store: MemoryStore, run_id: str) -> list[str]:
    """The run's fault events after the warning at its creation (which names b)."""
    warning, *rest = faults_of(store, run_id)
    assert warning == "warning: sites offline or revoked at creation: b"
    return rest


def recipients(sched: Scheduler, site: str, sent: set[tuple[str, int, int]]) -> list[str]:
    """The recipients named by what ``site``'s stream is sent now."""
    return [
        (a.next_hop.site_id or "owner") if a.next_hop else ""
        for a in sched.assignments.for_site(site, sent)
    ]


@pytest.mark.parametrize("configured", ["wait", "retry"])
def test_a_revoked_site_is_waited_for_since_retrying_cannot_help(configured: str) -> None:
    policy = FaultsSection(on_lost_site=configured)  # type: ignore[arg-type]
    facts = FaultFacts(hop_index=1, site_id="b")
    got = decide(policy, Fault.REVOKED, facts)
    assert (got.action, got.reason) == (
        Action.WAIT,
        "hop 2 at b has a revoked certificate; waiting for the site to be certified again",
    )
    skip = decide(FaultsSection(on_lost_site="skip"), Fault.REVOKED, facts)
    assert (skip.action, skip.reason) == (Action.SKIP, "hop 2 at b has a revoked certificate; skip")


def test_wait_holds_the_hop_back_warns_once_and_sends_it_once_certified_again(
    pki: Pki,
) -> None:
    revoked = {b"tls-b"}
    store, _blobs, sched, run_id = make(pki, "ab", "", revoked)
    watcher = watch(store, sched)
    sent: set[tuple[str, int, int]] = set()
    assert recipients(sched, "a", sent) == []  # held back; the stream stays open
    assert watcher.check() == 0
    assert watcher.check() == 0  # one warning per revocation, not one per pass
    assert decisions(store, run_id) == [
        "wait: hop 2 at b has a revoked certificate; waiting for the site to be certified again"
    ]
    assert store.get_run(run_id).state is RunState.RUNNING
    revoked.clear()  # b is certified again
    assert recipients(sched, "a", sent) == ["b"]
    assert watcher.check() == 0
    assert len(decisions(store, run_id)) == 1


@pytest.mark.parametrize("action", ["skip", "reroute"])
def test_skip_replaces_the_revoked_recipient_and_offers_the_hop_before_once(
    pki: Pki, action: str
) -> None:
    store, blobs, sched, run_id = make(pki, "abc", f'on_lost_site = "{action}"', {b"tls-b"})
    watcher = watch(store, sched)
    sent: set[tuple[str, int, int]] = set()
    assert recipients(sched, "a", sent) == []
    watcher.check()
    assert [(h.site_id, h.state) for h in store.list_hops(run_id)[:2]] == [
        ("a", HopState.ASSIGNED),
        ("c", HopState.PENDING),
    ]
    assert store.get_run(run_id).total_hops == 5
    assert recipients(sched, "a", sent) == ["c"]  # offered once, naming its new recipient
    assert recipients(sched, "a", sent) == []
    watcher.check()
    assert decisions(store, run_id) == [f"{action}: hop 2 at b has a revoked certificate; {action}"]
    finish_hop(sched, blobs, run_id, 0, "a")
    assert store.get_hop(run_id, 1).state is HopState.ASSIGNED


def test_too_few_sites_left_ends_the_run_with_the_reason(pki: Pki) -> None:
    store, _blobs, sched, run_id = make(
        pki, "ab", 'on_lost_site = "skip"\nmin_sites = 2', {b"tls-b"}
    )
    watch(store, sched).check()
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED
    assert run.error == (
        "hop 2 at b has a revoked certificate and only 1 sites remain (min_sites = 2)"
    )


def test_a_revoked_study_owner_fails_the_run_at_its_last_hop(pki: Pki) -> None:
    revoked: set[bytes] = set()
    store, blobs, sched, run_id = make(pki, "a", "", revoked)
    finish_hop(sched, blobs, run_id, 0, "a")
    revoked.add(store.get_run(run_id).owner_encryption_certificate_pem.encode())
    assert recipients(sched, "a", set()) == []  # never sealed to a revoked owner
    watch(store, sched).check()
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED
    assert run.error == (
        "hop 2 at a cannot be sealed to the study owner, who holds a revoked certificate"
    )
    assert store.get_hop(run_id, 1).state is HopState.FAILED
