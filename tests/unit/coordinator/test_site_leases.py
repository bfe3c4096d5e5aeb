"""Heartbeats renew leases in memory and reach the database in batches: the leases are
judged by memory, a flush is one transaction, and a stop's flush survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.errors import ConflictError, StoreError
from coordinator.engine.journal import Journal
from coordinator.engine.sites import Sites
from coordinator.store.base import SiteRecord, Store
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore
from tests.conftest import Pki
from tests.unit.coordinator.test_faults import LEASE_S, Clock, faults_of, make, watch

T0 = 1_000_000


class CountingStore(MemoryStore):
    """A memory store that counts its heartbeat writes, and fails them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, int]] = []
        self.broken = False

    def touch_sites(self, seen: dict[str, int]) -> None:
        if self.broken:
            raise StoreError("disk full")
        self.writes.append(dict(seen))
        super().touch_sites(seen)


def registry(store: Store, clock: Clock, *names: str) -> Sites:
    for name in names:
        store.upsert_site(SiteRecord(site_id=name, certificate_pem="pem", last_seen_ms=T0))
    return Sites(store, Journal(store, clock=clock), ca_pem=b"", lease_seconds=LEASE_S)


def test_heartbeats_stay_in_memory_until_one_flush_writes_them_all() -> None:
    store, clock = CountingStore(), Clock()
    sites = registry(store, clock, "a", "b", "c")
    for step in range(1, 4):
        clock.t = T0 + step * 1000
        for name in ("a", "b"):
            assert sites.heartbeat(name) == clock.t + int(LEASE_S * 1000)
    assert store.writes == []
    assert store.get_site("a").last_seen_ms == T0
    assert sites.last_seen() == {"a": T0 + 3000, "b": T0 + 3000, "c": T0}
    assert sites.flush() == 2
    assert store.writes == [{"a": T0 + 3000, "b": T0 + 3000}]
    assert [s.last_seen_ms for s in store.list_sites()] == [T0 + 3000, T0 + 3000, T0]
    assert sites.flush() == 0
    assert len(store.writes) == 1


def test_the_listing_judges_leases_by_the_heartbeats_in_memory() -> None:
    store, clock = CountingStore(), Clock()
    sites = registry(store, clock, "a", "b")
    clock.t = T0 + int(LEASE_S * 1000)
    sites.heartbeat("a")
    clock.t += 1
    assert [(s.site_id, s.last_seen_ms, live) for s, live in sites.listing()] == [
        ("a", T0 + int(LEASE_S * 1000), True),
        ("b", T0, False),
    ]


def test_a_site_that_never_registered_is_refused() -> None:
    sites = registry(MemoryStore(), Clock(), "a")
    with pytest.raises(ConflictError, match=r"^site ghost must register first$"):
        sites.heartbeat("ghost")


def test_a_failed_flush_keeps_the_heartbeats_for_the_next() -> None:
    store, clock = CountingStore(), Clock()
    sites = registry(store, clock, "a")
    clock.t = T0 + 5000
    sites.heartbeat("a")
    store.broken = True
    with pytest.raises(StoreError):
        sites.flush()
    store.broken = False
    assert sites.flush() == 1
    assert store.get_site("a").last_seen_ms == T0 + 5000


def test_the_last_heartbeat_survives_a_restart_within_one_lease(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path / "c.db")
    sites = registry(store, clock, "a")
    clock.t = T0 + 7000
    sites.heartbeat("a")
    sites.flush()  # what the server's stop does
    store.close()
    store = SqliteStore(tmp_path / "c.db")
    clock.t = T0 + 7000 + int(LEASE_S * 1000)  # one lease after the beat: still live
    again = Sites(store, Journal(store, clock=clock), ca_pem=b"", lease_seconds=LEASE_S)
    assert again.last_seen() == {"a": T0 + 7000}
    assert [live for _, live in again.listing()] == [True]
    store.close()


def test_a_hop_whose_site_beats_only_in_memory_is_not_lost(pki: Pki) -> None:
    store, _blobs, sched, clock, run_id = make(pki, "ab", "")
    sites = Sites(store, sched.journal, ca_pem=pki.ca_pem, lease_seconds=LEASE_S)
    hops = watch(store, sched, leases=sites)
    clock.t += int(LEASE_S * 1000) - 1000
    sites.heartbeat("a")
    clock.t += 2000  # past the lease counted from the assignment, not from the beat
    assert hops.check() == 0
    assert store.get_site("a").last_seen_ms == clock.t - 2000  # the check flushed it
    clock.t += int(LEASE_S * 1000)
    assert hops.check() == 1
    assert "(lease expired)" in faults_of(store, run_id)[0]


def test_the_fault_policy_counts_a_heartbeat_not_yet_flushed(pki: Pki) -> None:
    store, _blobs, sched, clock, _run_id = make(pki, "ab", "")
    sites = Sites(store, sched.journal, ca_pem=pki.ca_pem, lease_seconds=LEASE_S)
    sched.recovery.heard = sites.heard
    clock.t += int(LEASE_S * 1000) + 1
    sites.heartbeat("b")
    assert (sched.recovery.alive("a"), sched.recovery.alive("b")) == (False, True)
