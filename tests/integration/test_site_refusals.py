"""Errors that end, not loops: a live coordinator that refuses a site's call for good (its
input blob deleted, its blob store unable to write) makes the hop fail once, with a
reason, instead of a reconnect-and-retrain loop; an unreachable one is a transient error.

Real coordinator (in process, real gRPC and mTLS), real site hop runners.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from baton.errors import Rejected, ServerFault, TransportError
from baton.security.tls import channel_credentials
from baton.v1 import admin_pb2, common_pb2, site_pb2_grpc
from baton.wire.channel import secure_channel
from site_node.client import GrpcCoordinatorClient
from tests.conftest import LiveCoordinator
from tests.integration.sites import Sites, create_request, next_hop, plan

PLAN = plan(["site-a", "site-b"])


def _blob_file(coordinator: LiveCoordinator, blob_id: str) -> Path:
    [path] = (coordinator.server.blobs.root / "sha256").rglob(blob_id)
    return path


def _events(tmp_path: Path, site: str) -> list[str]:
    lines = (tmp_path / f"{site}.audit.jsonl").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines]


def test_a_deleted_input_blob_fails_the_hop_once_then_the_sender_seals_it_again(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites
) -> None:
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    hop0 = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id)).hops[0]
    _blob_file(coordinator, hop0.output.blob_id).unlink()

    assert not sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))

    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_RUNNING  # nothing is lost: hop 0 is offered again
    assert not got.hops[1].metrics_before  # nothing was evaluated or trained
    assert _events(tmp_path, "site-b") == ["plan_accepted", "hop_rejected"]
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))

    # site-a seals its kept output again (a new key, so a new blob), without training.
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    assert _events(tmp_path, "site-a").count("hop_sent") == 2
    resealed = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id)).hops[0]
    assert resealed.output.blob_id != hop0.output.blob_id
    assert _blob_file(coordinator, resealed.output.blob_id).is_file()
    # site-b now opens the re-sealed input and trains: the chain verifies at the recipient.
    assert sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))
    assert _events(tmp_path, "site-b")[-2:] == ["hop_received", "hop_sent"]


def test_a_blob_store_that_cannot_write_is_retried_from_the_kept_output_never_retrained(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites
) -> None:
    """The coordinator answers INTERNAL (a server fault, retried a few times): each
    delivery uploads the output the site kept, sealed at rest, and trains nothing again."""
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    partial = coordinator.server.blobs.root / "partial"
    shutil.rmtree(partial)
    partial.write_bytes(b"")  # no upload can be opened under it: every write fails
    assignment = next_hop(sites.stubs["site-a"])
    runner = sites.runner("site-a")

    for _ in range(2):
        with pytest.raises(ServerFault) as fault:
            runner.run(assignment)
        assert fault.value.status == "INTERNAL"
        assert "the coordinator's blob store failed" in fault.value.message
        assert str(partial) not in fault.value.message  # the coordinator's paths stay there

    assert _events(tmp_path, "site-a") == ["plan_accepted"]  # received and trained once
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_RUNNING
    kept = tmp_path / "site-a" / run.run_id / "hop-00000.out"
    assert sorted(p.name for p in kept.iterdir()) == ["entry.json", "own.sealed", "sealed"]
    assert {p.stat().st_mode & 0o777 for p in kept.iterdir()} == {0o600}
    assert kept.stat().st_mode & 0o777 == 0o700
    assert not list((tmp_path / "site-a").rglob("*.safetensors"))

    partial.unlink()
    partial.mkdir(mode=0o700)  # the store is writable again: the kept output goes through
    assert runner.run(assignment)
    assert _events(tmp_path, "site-a") == ["plan_accepted", "hop_sent"]
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.hops[0].output.blob_id == hashlib.sha256((kept / "sealed").read_bytes()).hexdigest()


def test_the_port_tells_a_refusal_from_an_unreachable_coordinator(
    coordinator: LiveCoordinator, sites: Sites
) -> None:
    refusing = GrpcCoordinatorClient(sites.stubs["site-a"], target=coordinator.target)
    with pytest.raises(Rejected) as refused:
        refusing.report_metrics(run_id="no-such-run", hop_index=0, stage="before", metrics={})
    assert refused.value.status == "NOT_FOUND"
    assert "no-such-run" in refused.value.message

    creds = channel_credentials(coordinator.pki.material("site-a"))
    with secure_channel("127.0.0.1:1", creds) as channel:  # nothing listens on port 1
        gone = GrpcCoordinatorClient(site_pb2_grpc.SiteServiceStub(channel), target="c:1")
        with pytest.raises(TransportError) as lost:
            gone.heartbeat()
    assert type(lost.value) is TransportError
    assert lost.value.message.startswith("cannot heartbeat: coordinator at c:1 unreachable")
