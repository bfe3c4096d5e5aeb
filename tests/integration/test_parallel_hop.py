"""A hop trained with a 2-rank data-parallel plan, end to end: the site opens the model,
hands it to two worker processes, loads their full result and seals it to the next party.

Real coordinator (in process, real gRPC and mTLS), real hop runners, real workers (forked,
or started by torchrun), real sealing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from baton.ml.codec import load_state_file
from baton.security.sealing import manifest_digest, plan_hash
from baton.v1 import admin_pb2, common_pb2
from site_node.config import SiteTraining
from site_node.parallel import worker
from tests.conftest import LiveCoordinator
from tests.integration.sites import Sites, create_request, next_hop, open_as

PLAN = """
[run]
name = "parallel-hop"
seed = 5
sites = ["site-a", "site-b"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_steps = 12
batch_size = 32

[security]
escrow_to_owner = true
"""


def _opened(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    hop: Any,
    *,
    sender: str,
    previous: str,
    digest: str,
    run: str,
) -> dict[str, torch.Tensor]:
    """The owner opens the sealed output of ``hop``."""
    sealed = tmp_path / f"owner-hop{hop.hop_index}.sealed"
    sealed.write_bytes(b"".join(coordinator.server.blobs.read(hop.output.blob_id)))
    path = open_as(
        coordinator,
        "owner",
        sealed,
        hop.output_manifest,
        sender=sender,
        run_id=run,
        hop=hop.hop_index,
        previous=previous,
        plan_digest=digest,
    )
    return load_state_file(path)


@pytest.mark.parametrize("launcher", ["fork", pytest.param("torchrun", marks=pytest.mark.slow)])
def test_a_hop_trains_with_two_workers_and_is_sealed_on(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites, launcher: str
) -> None:
    admin = coordinator.admin()
    request = create_request(coordinator.pki, PLAN)
    digest = plan_hash(PLAN, request.plan_signature)
    run = admin.CreateRun(request).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    ddp = SiteTraining(parallel_plan="ddp", workers=2, launcher=launcher)
    assert sites.runner("site-b", ddp).run(next_hop(sites.stubs["site-b"]))

    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_SUCCEEDED, got.error
    hop0, hop1 = got.hops
    assert hop1.metrics_after["accuracy"] > 0.8
    assert hop1.num_examples == len(sites.fed.sites["site-b"].train)
    # Rank 0's progress reached the coordinator, with the workers' throughput.
    events = admin.WatchRun(admin_pb2.WatchRunRequest(run_id=run.run_id), timeout=10)
    progress = [
        dict(e.metrics)
        for e in events
        if e.hop_index == 1
        and e.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS
        and e.message == "progress"
    ]
    assert progress[-1]["step"] == progress[-1]["total_steps"] == 12
    assert all(p["samples_per_s"] > 0 for p in progress)
    # The owner opens both hops' sealed models: site-b's workers changed every weight
    # tensor and left the fitted input normalization as it came.
    before = _opened(
        coordinator, tmp_path, hop0, sender="site-a", previous=digest, digest=digest, run=run.run_id
    )
    after = _opened(
        coordinator,
        tmp_path,
        hop1,
        sender="site-b",
        previous=manifest_digest(hop0.output_manifest),
        digest=digest,
        run=run.run_id,
    )
    assert set(after) == set(before)
    for name, value in after.items():
        if name.startswith("input_norm."):
            assert torch.equal(value, before[name]), name
        else:
            assert not torch.equal(value, before[name]), name
            assert torch.isfinite(value).all(), name
    # Nothing in plaintext stays at the site: neither the model nor the training data.
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))
    assert not list((tmp_path / "site-b").rglob("*.job"))


def _crash_on_rank_1(*args: Any, rank: int, **kwargs: Any) -> dict[str, Any]:
    if rank == 1:
        raise RuntimeError("simulated worker crash")
    result: dict[str, Any] = _real_train(*args, rank=rank, **kwargs)
    return result


_real_train = worker._train


def test_a_worker_crash_fails_the_hop_and_keeps_the_previous_model(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    # Forked workers inherit the patch: rank 1 raises once it starts training.
    monkeypatch.setattr(worker, "_train", _crash_on_rank_1)
    ddp = SiteTraining(parallel_plan="ddp", workers=2, launcher="fork")
    assert not sites.runner("site-b", ddp).run(next_hop(sites.stubs["site-b"]))

    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_FAILED
    assert got.error == (
        "hop 2 at site-b failed: training_error: "
        "training failed: rank 1: RuntimeError: simulated worker crash"
    )
    assert not got.hops[1].metrics_after
    assert not got.hops[1].output.blob_id
    # The model that came in is kept, sealed, in the blob store.
    assert coordinator.server.blobs.exists(got.hops[0].output.blob_id)
    # No plaintext model, training data or half-written result is left behind.
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))
    assert not list((tmp_path / "site-b").rglob("*.job"))
    last = json.loads((tmp_path / "site-b.audit.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["detail"]["reason"]) == ("hop_rejected", "training_error")
