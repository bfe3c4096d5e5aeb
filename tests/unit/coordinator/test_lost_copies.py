"""A hop's input copy lost at the coordinator: its sender seals it again, or the run fails
naming the hop (and the escrowed hop to restart from); the lease check reads running runs."""

from __future__ import annotations

import pytest

from baton.errors import ConflictError
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.recovery import MAX_RESEALS
from coordinator.engine.transfers import Transfers
from coordinator.store.base import HopState, RunState
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki
from tests.unit.coordinator.test_faults import LEASE_S, beat, faults_of, make, watch
from tests.unit.coordinator.test_scheduler import finish_hop, put, signed

ESCROW = "\n[security]\nescrow_to_owner = true\n"


def corrupt(blobs: MemoryBlobStore, blob_id: str) -> None:
    """Flips the stored bytes in place, as a failing disk would (same length)."""
    data = blobs._blobs[blob_id]
    blobs._blobs[blob_id] = bytes([data[0] ^ 0xFF]) + data[1:]


def transfers(store: MemoryStore, blobs: MemoryBlobStore, sched: object) -> Transfers:
    return Transfers(store, blobs, sched, max_blob_bytes=1 << 20)  # type: ignore[arg-type]


def test_a_corrupt_input_is_sealed_again_by_its_sender_and_the_run_goes_on(pki: Pki) -> None:
    store, blobs, sched, _, run_id = make(pki, "abc", "")
    first = finish_hop(sched, blobs, run_id, 0, "a")
    corrupt(blobs, first.blob_id)
    with pytest.raises(ConflictError, match="the input of hop 2 fails its SHA-256 check"):
        transfers(store, blobs, sched).download("b", run_id, 1, offset=0, chunk_size=64)
    hops = store.list_hops(run_id)
    assert [(h.site_id, h.state) for h in hops[:2]] == [
        ("a", HopState.ASSIGNED),  # offered again, to seal its output again
        ("b", HopState.PENDING),
    ]
    assert faults_of(store, run_id) == [
        "reseal: the coordinator's copy of hop 1 (its output, sealed by a for hop 2 at b) "
        "fails its SHA-256 check; a seals it again for b"
    ]
    (again,) = sched.assignments.for_site("a", {(run_id, 0, 0)})
    assert (again.hop_index, again.next_hop and again.next_hop.site_id) == (0, "b")
    fresh = put(blobs, b"sealed again with a new key", "t0-again")
    sched.complete_hop(
        "a", run_id, 0, output=fresh, output_manifest=b"m2", metrics_before={},
        metrics_after={}, num_examples=1, train_seconds=0.0,
    )  # fmt: skip
    assert store.get_hop(run_id, 1).state is HopState.ASSIGNED
    assert store.get_hop(run_id, 1).input == fresh
    (offered,) = sched.assignments.for_site("b", {(run_id, 1, 0)})  # b's stream sends it again
    assert offered.input == fresh
    assert offered.input_manifest == b"m2"
    got = transfers(store, blobs, sched).download("b", run_id, 1, offset=0, chunk_size=4)
    assert b"".join(got) == b"sealed again with a new key"
    assert store.get_run(run_id).total_hops == 6  # no hop lost


def test_a_missing_input_reported_by_the_site_is_sealed_again(pki: Pki) -> None:
    store, blobs, sched, _, run_id = make(pki, "abc", "")
    first = finish_hop(sched, blobs, run_id, 0, "a")
    blobs._blobs.pop(first.blob_id)
    sched.fail_hop("b", run_id, 1, reason="transfer_error", message="hash mismatch")
    assert store.get_run(run_id).state is RunState.RUNNING  # on_failed_hop = fail not applied
    assert store.get_hop(run_id, 0).state is HopState.ASSIGNED
    assert faults_of(store, run_id)[-1].startswith(
        "reseal: the coordinator's copy of hop 1 (its output, sealed by a for hop 2 at b) "
        "is missing"
    )


def test_resealing_one_hop_is_bounded(pki: Pki) -> None:
    store, blobs, sched, _, run_id = make(pki, "abc", "")
    for i in range(MAX_RESEALS + 1):
        ref = put(blobs, f"copy {i}".encode(), f"t{i}")
        sched.complete_hop(
            "a", run_id, 0, output=ref, output_manifest=b"m", metrics_before={},
            metrics_after={}, num_examples=1, train_seconds=0.0,
        )  # fmt: skip
        corrupt(blobs, ref.blob_id)
        with pytest.raises(ConflictError):
            transfers(store, blobs, sched).download("b", run_id, 1, offset=0, chunk_size=64)
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED
    assert run.error.endswith(f"after {MAX_RESEALS} re-seals: check the coordinator's blob store")


@pytest.mark.parametrize("escrow", [True, False])
def test_a_corrupt_input_whose_sender_is_gone_fails_naming_the_escrowed_hop(
    pki: Pki, escrow: bool
) -> None:
    store, blobs, sched, clock, run_id = make(pki, "abc", ESCROW if escrow else "")
    finish_hop(sched, blobs, run_id, 0, "a")
    second = finish_hop(sched, blobs, run_id, 1, "b")
    corrupt(blobs, second.blob_id)
    clock.t += int(LEASE_S * 1000) + 1
    beat(store, clock, "a", "c")  # b is gone
    with pytest.raises(ConflictError, match="the run failed"):
        transfers(store, blobs, sched).download("c", run_id, 2, offset=0, chunk_size=64)
    run = store.get_run(run_id)
    reason = (
        "the coordinator's copy of hop 2 (its output, sealed by b for hop 3 at c) fails its "
        "SHA-256 check, and b is gone too: nobody can seal it again"
    )
    if escrow:
        reason += (
            "; the owner can restart from the escrowed hop 1: "
            f"`baton fetch {run_id} hop-1.safetensors --hop 1` opens its sealed output, and "
            "`baton submit PLAN --start-from hop-1.safetensors` trains on from it (the plan "
            "pinning the file's SHA-256 as [model] start_from)"
        )
    assert (run.state, run.error) == (RunState.FAILED, reason)
    assert store.get_hop(run_id, 2).state is HopState.FAILED


def test_a_lost_site_whose_previous_site_is_gone_names_the_escrowed_hop(pki: Pki) -> None:
    faults = 'on_lost_site = "skip"\nmin_sites = 1' + ESCROW
    store, blobs, sched, clock, run_id = make(pki, "abc", faults)
    finish_hop(sched, blobs, run_id, 0, "a")
    finish_hop(sched, blobs, run_id, 1, "b")
    clock.t += int(LEASE_S * 1000) + 1
    beat(store, clock, "a")  # c, holding hop 3, is lost and b, who would re-seal, too
    assert watch(store, sched).check() == 1
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED
    assert run.error == (
        "hop 3 at c was lost and the previous site b is gone too: nobody can re-seal the "
        "last completed hop; the owner can restart from the escrowed hop 2: "
        f"`baton fetch {run_id} hop-2.safetensors --hop 2` opens its sealed output, and "
        "`baton submit PLAN --start-from hop-2.safetensors` trains on from it (the plan "
        "pinning the file's SHA-256 as [model] start_from): "
        "no heartbeat for 10 s (lease expired)"
    )


def test_the_lease_check_reads_only_running_runs(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, sched, clock, run_id = make(pki, "abc", 'on_lost_site = "retry"')
    watcher = watch(store, sched)
    assert watcher.check() == 0  # reads the runs once
    monkeypatch.setattr(store, "list_runs", lambda: pytest.fail("read every run"))
    other = sched.create_run(*signed(pki, store.get_run(run_id).plan_toml))
    assert sorted(sched.journal.running()) == sorted([run_id, other.run_id])
    sched.cancel_run(run_id, "enough")
    assert sched.journal.running() == [other.run_id]
    clock.t += int(LEASE_S * 1000) + 1
    beat(store, clock, "b", "c")  # a, holding the other run's hop 1, is lost
    assert watcher.check() == 1
    assert store.get_run(run_id).state is RunState.CANCELLED
