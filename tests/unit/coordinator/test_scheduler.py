"""The run engine over the in-memory store: planning, hand-over, failure, cancel, recovery."""

from __future__ import annotations

import hashlib

import pytest

from baton.domain import BlobRef, DataProfile
from baton.errors import ConfigError, ConflictError, Denied, NotFoundError, PkiError
from baton.plan import parse_plan
from baton.security.sealing import sign_plan
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.planning import probe_outcomes
from coordinator.engine.runs import Scheduler, SignedPlan
from coordinator.store.base import EventKind, HopState, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki

PLAN = """
[run]
name = "s"
sites = ["a", "b", "c"]
cycles = 2
seed = {seed}

[model]
name = "logreg"

[task]
dataset = "wine"

[ordering]
strategy = "{strategy}"
"""
WINE = DataProfile(schema_hash="1" * 64, task="wine")
"""What every site publishes: data of the plan's task, all with one schema."""


class Clock:
    def __init__(self) -> None:
        self.t = 1_000

    def __call__(self) -> int:
        self.t += 1
        return self.t


@pytest.fixture
def parts(pki: Pki) -> tuple[MemoryStore, MemoryBlobStore, Scheduler]:
    store, blobs = MemoryStore(), MemoryBlobStore()
    for s in "abc":
        store.upsert_site(SiteRecord(site_id=s, certificate_pem="pem", profile=WINE))
    return store, blobs, Scheduler(store, blobs, ca_pem=pki.ca_pem, clock=Clock())


def signed(pki: Pki, plan: str) -> tuple[str, SignedPlan]:
    """A plan with the test owner's signature, as create_run takes it."""
    return plan, pki.signed_plan(plan)


def put(blobs: MemoryBlobStore, data: bytes, transfer: str) -> BlobRef:
    blobs.append(transfer, 0, data)
    return blobs.finish(
        transfer, expected_sha256=hashlib.sha256(data).hexdigest(), expected_size=len(data)
    )


def finish_hop(
    sched: Scheduler, blobs: MemoryBlobStore, run_id: str, hop: int, site: str
) -> BlobRef:
    ref = put(blobs, f"{run_id}/{hop}".encode(), f"t{hop}")
    sched.complete_hop(
        site,
        run_id,
        hop,
        output_manifest=b"manifest",
        output=ref,
        metrics_before={"accuracy": 0.1},
        metrics_after={"accuracy": 0.2},
        num_examples=5,
        train_seconds=0.01,
    )
    return ref


def stored_completion(store: MemoryStore, run_id: str, hop: int, ref: BlobRef) -> None:
    """A hop's completion as the store alone records it, bypassing the scheduler."""
    store.complete_hop(
        run_id,
        hop,
        output=ref,
        metrics_before={},
        metrics_after={},
        num_examples=1,
        train_seconds=0.0,
    )


def test_fixed_run_goes_through_every_hop_in_plan_order(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    assert run.total_hops == 6
    # Only the first cycle is planned up front; hop 0 is assigned with no input.
    hops = store.list_hops(run.run_id)
    assert [(h.site_id, h.state) for h in hops] == [
        ("a", HopState.ASSIGNED),
        ("b", HopState.PENDING),
        ("c", HopState.PENDING),
    ]
    assert hops[0].input is None
    prev = None
    for i in range(6):
        site = "abc"[i % 3]
        assert store.assigned_hops_for_site(site)[0].hop_index == i
        assert store.get_hop(run.run_id, i).input == prev
        nxt = sched.assignments.next_hop(store.get_run(run.run_id), i)
        assert nxt.final == (i == 5)
        if i < 5:
            assert (nxt.hop_index, nxt.site_id) == (i + 1, "abc"[(i + 1) % 3])
        prev = finish_hop(sched, blobs, run.run_id, i, site)
    done = store.get_run(run.run_id)
    assert done.state is RunState.SUCCEEDED
    assert done.result == prev
    kinds = [e.kind for e in store.list_events(run.run_id)]
    assert kinds.count(EventKind.HOP_ASSIGNED) == 6
    assert kinds[-1] is EventKind.RUN_SUCCEEDED


def test_next_cycle_is_planned_when_the_last_hop_of_a_cycle_is_assigned(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=4, strategy="reshuffle")))
    order = [h.site_id for h in store.list_hops(run.run_id)]
    finish_hop(sched, blobs, run.run_id, 0, order[0])
    assert len(store.list_hops(run.run_id)) == 3
    finish_hop(sched, blobs, run.run_id, 1, order[1])  # assigns hop 2, the cycle's last
    assert len(store.list_hops(run.run_id)) == 6
    (assignment,) = sched.assignments.for_site(order[2], set())
    nxt = assignment.next_hop
    assert nxt is not None
    assert (nxt.final, nxt.hop_index) == (False, 3)
    assert nxt.site_id == store.get_hop(run.run_id, 3).site_id != order[2]  # reshuffle
    # Building the assignment again reads the same planned hop and plans nothing more.
    assert sched.assignments.next_hop(store.get_run(run.run_id), 2) == nxt
    assert len(store.list_hops(run.run_id)) == 6


def test_every_assignment_names_its_recipient_and_the_last_the_study_owner(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    store, blobs, sched = parts
    plan, sig = signed(pki, PLAN.format(seed=0, strategy="fixed"))
    run = sched.create_run(plan, sig)
    store.upsert_site(
        SiteRecord(
            site_id="b",
            certificate_pem="tls-b",
            signing_certificate_pem="sig-b",
            encryption_certificate_pem="enc-b",
        )
    )
    recipients = []
    for i in range(run.total_hops):
        site = "abc"[i % 3]
        (a,) = sched.assignments.for_site(site, set())
        assert (a.run_id, a.hop_index, a.evaluate_only) == (run.run_id, i, False)
        assert a.next_hop is not None
        recipients.append((a.next_hop.final, a.next_hop.site_id, a.next_hop.hop_index))
        if i == 0:
            assert (a.next_hop.certificate_pem, a.next_hop.encryption_certificate_pem) == (
                "tls-b",
                "enc-b",
            )
        finish_hop(sched, blobs, run.run_id, i, site)
    assert recipients == [
        (False, "b", 1),
        (False, "c", 2),
        (False, "a", 3),
        (False, "b", 4),
        (False, "c", 5),
        (True, "", 6),
    ]
    last = a.next_hop
    assert last is not None
    assert last.encryption_certificate_pem == sig.owner_encryption_pem
    assert last.evaluators == ()


def test_an_assignment_to_a_revoked_recipient_is_held_back_and_the_others_sent(
    pki: Pki,
) -> None:
    store, blobs = MemoryStore(), MemoryBlobStore()
    for s in "abc":
        store.upsert_site(SiteRecord(site_id=s, certificate_pem=f"tls-{s}", profile=WINE))
    revoked = {b"tls-b"}
    sched = Scheduler(store, blobs, ca_pem=pki.ca_pem, revoked=revoked.__contains__)
    refused = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    alone = PLAN.format(seed=0, strategy="fixed").replace('["a", "b", "c"]', '["a"]')
    fine = sched.create_run(*signed(pki, alone))
    sent: set[tuple[str, int, int]] = set()
    assert [a.run_id for a in sched.assignments.for_site("a", sent)] == [fine.run_id]
    assert sent == {(fine.run_id, 0, 0)}  # held back, so offered on a later read
    with pytest.raises(ConflictError, match="the next site b has a revoked certificate"):
        sched.assignments.next_hop(store.get_run(refused.run_id), 0)
    revoked.clear()
    assert [a.run_id for a in sched.assignments.for_site("a", {(fine.run_id, 0, 0)})] == [
        refused.run_id
    ]


def test_run_naming_unregistered_site_is_refused(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    _, _, sched = parts
    with pytest.raises(ConfigError, match="never registered: d"):
        sched.create_run(
            *signed(pki, PLAN.format(seed=0, strategy="fixed").replace('"c"]', '"c", "d"]'))
        )


def test_only_the_assigned_site_may_act(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    _, _, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    with pytest.raises(Denied):
        sched.hop_for_site("b", run.run_id, 0)
    with pytest.raises(ConflictError, match="hop 2 is pending"):
        sched.hop_for_site("b", run.run_id, 1)
    with pytest.raises(NotFoundError):
        sched.complete_hop(
            "a",
            run.run_id,
            0,
            output=BlobRef(blob_id="0" * 64, size=3),
            output_manifest=b"",
            metrics_before={},
            metrics_after={},
            num_examples=0,
            train_seconds=0,
        )


def test_failed_hop_fails_run_and_keeps_last_model(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    ref = finish_hop(sched, blobs, run.run_id, 0, "a")
    sched.fail_hop("b", run.run_id, 1, reason="data_error", message="bad rows")
    got = store.get_run(run.run_id)
    assert got.state is RunState.FAILED
    assert got.error == "hop 2 at b failed: data_error: bad rows"
    assert blobs.exists(ref.blob_id)
    assert store.get_hop(run.run_id, 1).input == ref


def test_cancel_fails_open_hops(
    pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler]
) -> None:
    store, _, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    got = sched.cancel_run(run.run_id, "")
    assert got.state is RunState.CANCELLED
    assert {h.state for h in store.list_hops(run.run_id)} == {HopState.FAILED}
    assert store.assigned_hops_for_site("a") == []
    with pytest.raises(ConflictError, match="already cancelled"):
        sched.cancel_run(run.run_id, "")


def test_recover_assigns_a_hop_lost_between_complete_and_assign(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    ref = put(blobs, b"m0", "t0")
    # A crash after the store recorded the completion but before the next hop was assigned.
    stored_completion(store, run.run_id, 0, ref)
    assert store.assigned_hops_for_site("b") == []
    Scheduler(store, blobs, ca_pem=pki.ca_pem).recover()
    [hop] = store.assigned_hops_for_site("b")
    assert (hop.hop_index, hop.input) == (1, ref)


def test_wait_for_change_wakes_on_change_and_times_out_otherwise(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
) -> None:
    _, _, sched = parts
    v = sched.journal.version
    assert sched.journal.wait_for_change(v, timeout=0.05) == v
    sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    assert sched.journal.wait_for_change(v, timeout=5) > v


def test_unsigned_or_tampered_plan_is_refused(
    pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler]
) -> None:
    store, _, sched = parts
    plan = PLAN.format(seed=0, strategy="fixed")
    good = pki.signed_plan(plan)
    with pytest.raises(PkiError, match="not signed"):
        sched.create_run(
            plan,
            SignedPlan(
                signature=b"",
                owner_signing_pem=good.owner_signing_pem,
                owner_encryption_pem=good.owner_encryption_pem,
            ),
        )
    with pytest.raises(PkiError, match="does not verify"):
        sched.create_run(plan.replace("cycles = 2", "cycles = 3"), good)
    # A site's keys cannot sign plans: only a study owner (admin) can.
    site = pki.keys("site-a")
    as_site = SignedPlan(
        signature=sign_plan(plan, site.signing_key),
        owner_signing_pem=site.signing_cert_pem.decode(),
        owner_encryption_pem=site.encryption_cert_pem.decode(),
    )
    with pytest.raises(PkiError, match="not a study owner"):
        sched.create_run(plan, as_site)
    assert store.list_runs() == []


EVALUATED = PLAN.replace("cycles = 2\n", "cycles = 1\nevaluate_at_sites = true\n")


def _finished(pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler], plan: str) -> str:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, plan))
    for i in range(run.total_hops):
        (hop,) = [h for h in store.list_hops(run.run_id) if h.hop_index == i]
        finish_hop(sched, blobs, run.run_id, i, hop.site_id)
    assert store.get_run(run.run_id).state is RunState.SUCCEEDED
    return run.run_id


def test_every_site_evaluates_a_finished_run_once_when_its_plan_asks(
    pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler]
) -> None:
    store, _, sched = parts
    plain = _finished(pki, parts, PLAN.format(seed=0, strategy="fixed"))
    evaluated = _finished(pki, parts, EVALUATED.format(seed=0, strategy="fixed"))
    assert [r.run_id for r in sched.evaluations.pending("a")] == [evaluated]

    sched.evaluations.record("a", evaluated, {"accuracy": 0.9, "num_examples": 10.0})

    assert sched.evaluations.pending("a") == []
    assert [r.run_id for r in sched.evaluations.pending("b")] == [evaluated]
    events = [e for e in store.list_events(evaluated) if e.kind is EventKind.SITE_EVALUATED]
    assert [(e.site_id, e.hop_index, e.metrics) for e in events] == [
        ("a", 3, {"accuracy": 0.9, "num_examples": 10.0})
    ]
    for site, run_id in (("a", evaluated), ("b", plain), ("z", evaluated)):
        with pytest.raises(ConflictError, match="expects no evaluation from site"):
            sched.evaluations.record(site, run_id, {"accuracy": 0.5})


def test_probe_runs_give_the_strategy_their_order_and_mean_validation_metrics(
    pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler]
) -> None:
    store, _, sched = parts
    probe = _finished(pki, parts, EVALUATED.format(seed=0, strategy="fixed"))
    sched.evaluations.record("a", probe, {"accuracy": 0.5, "loss": 1.0, "num_examples": 10.0})
    sched.evaluations.record("b", probe, {"accuracy": 1.0, "loss": 0.0, "num_examples": 30.0})
    unevaluated = _finished(pki, parts, EVALUATED.format(seed=1, strategy="fixed"))
    plan = parse_plan(
        PLAN.format(seed=0, strategy="learned") + f'probe_runs = ["{probe}", "{unevaluated}"]\n'
    )

    (outcome,) = probe_outcomes(store, plan)  # the run that no site evaluated yet gives nothing

    assert outcome.order == ("a", "b", "c")
    assert outcome.metrics == {"accuracy": pytest.approx(0.875), "loss": pytest.approx(0.25)}
    run = sched.create_run(
        *signed(pki, PLAN.format(seed=0, strategy="learned") + f'probe_runs = ["{probe}"]\n')
    )
    assert store.get_run(run.run_id).state is RunState.RUNNING


@pytest.mark.parametrize(
    ("probe_plan", "message"),
    [
        (None, "probe run 'nope' does not exist"),
        (PLAN.format(seed=0, strategy="fixed"), "was not evaluated at the sites"),
        (
            EVALUATED.format(seed=0, strategy="fixed").replace('["a", "b", "c"]', '["a", "b"]'),
            "trained other sites than this plan",
        ),
    ],
)
def test_a_probe_run_that_cannot_inform_the_order_is_refused(
    pki: Pki,
    parts: tuple[MemoryStore, MemoryBlobStore, Scheduler],
    probe_plan: str | None,
    message: str,
) -> None:
    _, _, sched = parts
    probe = "nope" if probe_plan is None else _finished(pki, parts, probe_plan)
    plan = PLAN.format(seed=0, strategy="learned") + f'probe_runs = ["{probe}"]\n'
    with pytest.raises(ConfigError, match=message):
        sched.create_run(*signed(pki, plan))


def test_recover_plans_the_recipient_of_a_hop_an_older_coordinator_assigned(
    pki: Pki, parts: tuple[MemoryStore, MemoryBlobStore, Scheduler]
) -> None:
    store, blobs, sched = parts
    run = sched.create_run(*signed(pki, PLAN.format(seed=0, strategy="fixed")))
    # An older coordinator assigned a cycle's last hop without planning the next cycle.
    ref = None
    for i in range(2):
        if i:
            store.assign_hop(run.run_id, i, input=ref)
        ref = put(blobs, f"m{i}".encode(), f"t{i}")
        stored_completion(store, run.run_id, i, ref)
    store.assign_hop(run.run_id, 2, input=ref)
    with pytest.raises(ConflictError, match=r"hop 4 of run \w+ is not planned yet"):
        sched.assignments.next_hop(store.get_run(run.run_id), 2)
    Scheduler(store, blobs, ca_pem=pki.ca_pem).recover()
    assert len(store.list_hops(run.run_id)) == 6
    nxt = sched.assignments.next_hop(store.get_run(run.run_id), 2)
    assert (nxt.site_id, len(store.list_hops(run.run_id))) == (
        "a",
        6,
    )
