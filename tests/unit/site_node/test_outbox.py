"""A site keeps its sealed output until the hop after it is done: delivered again, the hop
is handed on without training, re-sealed for a new recipient when the coordinator names
one; a refused call fails the hop once; kept outputs of finished runs go."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from baton.errors import Rejected
from site_node.fake_client import FakeCoordinatorClient
from site_node.outbox import Outbox
from tests.unit.site_node.hop_world import RUN, World, hop0, hop1, methods


def _progress(client: FakeCoordinatorClient) -> list[object]:
    return [c for c in client.calls_to("report_metrics") if c.args["stage"] == "progress"]


def test_a_rerouted_hop_is_resealed_for_the_new_recipient_without_training(world: World) -> None:
    a0, first = hop0(world)  # sealed to site-b
    to_b = world.opened(first, a0, first.completed[0], me="site-b", sender="site-a")
    rerouted = replace(a0, next_hop=world.site("site-c", 1))
    client = FakeCoordinatorClient()

    assert world.runner("site-a", client).run(rerouted)

    assert methods(client) == ["upload", "complete_hop"]  # nothing downloaded or trained
    assert not _progress(client)
    [done] = client.completed
    assert done.output_manifest != first.completed[0].output_manifest
    assert dict(done.metrics_after) == dict(first.completed[0].metrics_after)
    to_c = world.opened(client, rerouted, done, me="site-c", sender="site-a")
    assert to_c.keys() == to_b.keys()
    assert all(torch.equal(to_c[k], to_b[k]) for k in to_b)  # the very model site-b got
    events = [e["event"] for e in world.events("site-a")]
    assert events == ["plan_accepted", "hop_sent", "hop_resealed", "hop_sent"]
    assert not list((world.tmp / "site-a").rglob("*.safetensors"))


def test_a_resealing_for_a_revoked_recipient_fails_the_hop_once(world: World) -> None:
    a0, first = hop0(world)
    c_pem = world.pki.keys("site-c").signing_cert_pem.decode()
    client = FakeCoordinatorClient()
    runner = world.runner("site-a", client, revoked=lambda pem: pem == c_pem)

    assert not runner.run(replace(a0, next_hop=world.site("site-c", 1)))

    [failed] = client.calls_to("fail_hop")
    assert (failed.args["reason"], failed.args["message"]) == ("untrusted_party", "")
    assert methods(client) == ["fail_hop"]
    kept = Outbox(world.tmp / "site-a").get(RUN, 0)
    assert kept is not None
    assert kept.manifest == first.completed[0].output_manifest  # still sealed to site-b


def test_a_deleted_input_fails_the_hop_once_before_anything_trains(world: World) -> None:
    _, a1, client = hop1(world)
    refusal = Rejected("cannot download the input of hop 1: NOT_FOUND: blob gone", status="x")
    client.fail("download", refusal)
    client.fail("fail_hop", Rejected("cannot report: FAILED_PRECONDITION: cancelled", status="y"))

    assert not world.runner("site-b", client).run(a1)  # the refused report ends nothing

    assert methods(client) == ["download", "fail_hop"]
    [failed] = client.calls_to("fail_hop")
    assert failed.args["reason"] == "coordinator_refused"
    assert failed.args["message"] == refusal.message
    assert [e["event"] for e in world.events("site-b")] == ["plan_accepted", "hop_rejected"]


def test_kept_outputs_go_once_the_run_moves_on_ends_or_ages(world: World) -> None:
    _, a1, client = hop1(world)
    assert world.runner("site-b", client).run(a1)
    outbox_a, outbox_b = Outbox(world.tmp / "site-a"), Outbox(world.tmp / "site-b")
    assert outbox_a.get(RUN, 0) is not None

    assert outbox_a.release(RUN, assigned_hop=1) == 0  # hop 1 may still need hop 0's output
    assert outbox_a.release(RUN, assigned_hop=2) == 1  # hop 1 is done: hop 0's output goes
    assert outbox_a.get(RUN, 0) is None
    assert not outbox_a.path(RUN, 0).exists()

    assert outbox_b.sweep(older_than_s=3600) == 0
    assert outbox_b.sweep(older_than_s=3600, now=time.time() + 7200) == 1
    assert outbox_b.get(RUN, 1) is None


def test_an_evaluation_of_the_final_model_drops_the_runs_kept_outputs(world: World) -> None:
    a0, _ = hop0(world)
    runner = world.runner("site-a", FakeCoordinatorClient())
    evaluation = replace(a0, hop_index=2, evaluate_only=True, next_hop=None)

    runner.run(evaluation)  # refused here (no final model), but the run is over

    assert not Outbox(world.tmp / "site-a").path(RUN, 0).exists()
