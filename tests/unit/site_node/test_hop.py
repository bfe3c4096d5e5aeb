"""A hop at a site against the in-memory coordinator client: the first hop, an input opened
and trained on, the final hop sealed to the owner, a failure after training, a resumed hop
and an evaluation; real keys, real sealing, a tiny model."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import torch

from baton.errors import BlobError, SealError, TransportError
from baton.ml.codec import load_into
from baton.ml.data import Schema, SiteData, Split
from baton.ml.models import plan_model
from baton.ml.task import Metric
from baton.ml.trainer import evaluate
from baton.plan import parse_plan
from baton.security.sealing import manifest_digest
from site_node.fake_client import FakeCoordinatorClient
from tests.unit.site_node.hop_world import (
    RUN,
    SCHEMA,
    World,
    data,
    hop0,
    hop1,
    input_of,
    leftovers,
    methods,
    plan,
)

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn


def test_the_first_hop_builds_the_plans_model_and_seals_it_to_the_next_site(world: World) -> None:
    a, client = hop0(world)

    assert methods(client) == ["report_metrics", "upload", "complete_hop"]
    [done] = client.completed
    fresh = plan_model(parse_plan(a.plan_toml), SCHEMA)
    assert dict(done.metrics_before) == evaluate(fresh, data(ord("a")).val)
    assert done.num_examples == 48
    trained = world.opened(client, a, done, me="site-b", sender="site-a")
    assert set(trained) == set(fresh.state_dict())
    assert not torch.equal(trained["linear.weight"], fresh.state_dict()["linear.weight"])
    assert [e["event"] for e in world.events("site-a")] == ["plan_accepted", "hop_sent"]
    # Only the sealed output stays (until the next hop is done), never a plaintext model.
    assert [p.name for p in leftovers(world, "site-a", "hop-*")] == ["hop-00000.out"]
    assert leftovers(world, "site-a", "*.safetensors") == []


def test_an_input_is_received_verified_opened_and_trained_on(world: World) -> None:
    a0, a1, client = hop1(world)
    incoming = world.opened(client, a0, input_of(a1), me="site-b", sender="site-a")

    assert world.runner("site-b", client).run(a1)

    [download] = client.calls_to("download")
    assert download.args["blob"] == a1.input
    model = plan_model(parse_plan(a1.plan_toml), SCHEMA)
    load_into(model, incoming)
    [done] = client.completed
    assert dict(done.metrics_before) == evaluate(model, data(ord("b")).val)
    events = world.events("site-b")
    assert [e["event"] for e in events] == ["plan_accepted", "hop_received", "hop_sent"]
    assert events[1]["detail"]["manifest"] == manifest_digest(a1.input_manifest)
    assert leftovers(world, "site-b", "*.safetensors") == []
    assert leftovers(world, "site-b", "*.in.sealed") == []


def test_the_final_hop_is_sealed_to_the_study_owner(world: World) -> None:
    _, a1, client = hop1(world, world.owner(2))

    assert world.runner("site-b", client).run(a1)

    [done] = client.completed
    final = world.opened(client, a1, done, me="owner", sender="site-b")
    model = plan_model(parse_plan(a1.plan_toml), SCHEMA)
    load_into(model, final)
    assert evaluate(model, data(ord("b")).val) == dict(done.metrics_after)
    # Sealed to the owner alone: the sites of the plan cannot open it.
    with pytest.raises(SealError) as err:
        world.opened(client, a1, done, me="site-c", sender="site-b")
    assert err.value.reason == "wrong_recipient"


def _progress(client: FakeCoordinatorClient) -> list[object]:
    return [
        c.args["metrics"]
        for c in client.calls_to("report_metrics")
        if c.args["stage"] == "progress"
    ]


def test_a_lost_connection_after_training_loses_nothing_and_the_redelivered_hop_resumes(
    world: World,
) -> None:
    """The upload fails for want of the coordinator: the error propagates (nobody to tell),
    the sealed input and the sealed output stay in the site's private run directory, and
    the redelivered hop hands on the output it kept, without training again."""
    _, a1, client = hop1(world)
    client.fail("upload", TransportError("coordinator unreachable"))
    runner = world.runner("site-b", client)

    with pytest.raises(TransportError):
        runner.run(a1)

    assert not client.calls_to("fail_hop")
    assert not client.completed
    run_dir = world.tmp / "site-b" / RUN
    assert (run_dir / "hop-00001.in.sealed").stat().st_size == a1.input.size  # type: ignore[union-attr]
    assert (run_dir / "hop-00001.out" / "sealed").stat().st_size > 0
    assert leftovers(world, "site-b", "*.safetensors") == []
    first = _progress(client)

    assert runner.run(a1)

    assert _progress(client) == first  # not trained again
    [done] = client.completed
    assert [e["event"] for e in world.events("site-b")] == [
        "plan_accepted",
        "hop_received",
        "hop_sent",
    ]
    assert sorted(p.name for p in run_dir.iterdir()) == ["hop-00001.out"]
    final = world.opened(client, a1, done, me="owner", sender="site-b")
    model = plan_model(parse_plan(a1.plan_toml), SCHEMA)
    load_into(model, final)
    assert evaluate(model, data(ord("b")).val) == dict(done.metrics_after)


def test_a_refused_upload_fails_the_hop_and_keeps_the_sealed_model(world: World) -> None:
    _, a1, client = hop1(world)
    client.fail("upload", BlobError("coordinator stored a different blob than was sent"))

    assert not world.runner("site-b", client).run(a1)

    [failed] = client.calls_to("fail_hop")
    assert failed.args["reason"] == "transfer_error"
    assert failed.args["message"] == "coordinator stored a different blob than was sent"
    assert client.calls_to("report_metrics")[0].args["stage"] == "before"
    sealed = world.tmp / "site-b" / RUN / "hop-00001.out" / "sealed"
    assert sealed.stat().st_size > 0
    assert leftovers(world, "site-b", "*.safetensors") == []


def test_a_hop_whose_input_was_accepted_refuses_another_input_for_it(world: World) -> None:
    """A redelivered hop may re-open the input it accepted, never a different one."""
    a0, a1, client = hop1(world)
    assert world.runner("site-b", client).run(a1)
    other = FakeCoordinatorClient()
    shutil.rmtree(world.tmp / "site-a" / RUN / "hop-00000.out")  # forget its kept output
    assert world.runner("site-a", other).run(a0)  # site-a seals hop 0 again: a new manifest
    client.blobs.update(other.blobs)
    equivocated = world.after(a0, other.completed[0], sender="site-a", nxt=a1.next_hop)

    assert not world.runner("site-b", client).run(equivocated)

    assert world.events("site-b")[-1]["detail"]["check"] == "equivocation"


EVALUATED = plan(run="evaluate_at_sites = true")


@pytest.mark.parametrize(("text", "ok"), [(EVALUATED, True), (plan(), False)])
def test_a_site_evaluates_the_final_model_only_when_the_signed_plan_asks(
    world: World, text: str, ok: bool
) -> None:
    evaluators = ("site-a", "site-b", "site-c") if ok else ()
    _, a1, client = hop1(world, world.owner(2, *evaluators), text=text)
    assert world.runner("site-b", client).run(a1)
    [done] = client.completed
    final = world.after(a1, done, sender="site-b", nxt=None)
    evaluation = replace(final, evaluate_only=True)
    at_c = FakeCoordinatorClient()
    at_c.blobs.update(client.blobs)

    assert world.runner("site-c", at_c).run(evaluation) is ok

    assert not at_c.calls_to("fail_hop")  # an evaluation never fails a run
    assert leftovers(world, "site-c", "*.safetensors") == []
    if not ok:
        assert not at_c.calls_to("report_metrics")
        last = world.events("site-c")[-1]
        assert (last["event"], last["detail"]["reason"]) == (
            "evaluation_refused",
            "wrong_recipient",
        )
        return
    [report] = at_c.calls_to("report_metrics")
    assert (report.args["hop_index"], report.args["stage"]) == (2, "evaluation")
    model = plan_model(parse_plan(text), SCHEMA)
    load_into(model, world.opened(client, a1, done, me="owner", sender="site-b"))
    assert report.args["metrics"] == evaluate(model, data(ord("c")).val)
    assert world.events("site-c")[-1]["event"] == "model_evaluated"


class _BrierTask:
    """A task whose metrics name no accuracy: it ranks by a Brier score."""

    name = "tabular"
    primary_metric = Metric(name="brier", higher_is_better=False)

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        return {"brier": 0.125, "loss": 0.5}


def test_an_evaluation_audits_the_tasks_own_primary_metric(world: World) -> None:
    _, a1, client = hop1(world, world.owner(2, "site-c"), text=EVALUATED)
    assert world.runner("site-b", client).run(a1)
    [done] = client.completed
    at_c = FakeCoordinatorClient()
    at_c.blobs.update(client.blobs)
    evaluation = replace(world.after(a1, done, sender="site-b", nxt=None), evaluate_only=True)

    assert world.runner("site-c", at_c, task=_BrierTask()).run(evaluation)

    [report] = at_c.calls_to("report_metrics")
    assert report.args["metrics"] == {"brier": 0.125, "loss": 0.5}
    last = world.events("site-c")[-1]
    assert (last["event"], last["detail"]) == ("model_evaluated", {"brier": 0.125, "loss": 0.5})
