"""The coordinator over real gRPC and real mTLS: identities, the hop protocol, blob streaming."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from baton.domain import BlobRef
from baton.pki import Identity, create_ca, issue
from baton.v1 import admin_pb2, common_pb2, site_pb2, site_pb2_grpc
from baton.wire import MAX_MESSAGE_BYTES
from site_node import transfer
from tests.conftest import LiveCoordinator

PLAN = """
[run]
name = "grpc-test"
sites = [{sites}]
cycles = {cycles}

[model]
name = "logreg"

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"
"""


def plan(sites: list[str], cycles: int = 1) -> str:
    return PLAN.format(sites=", ".join(f'"{s}"' for s in sites), cycles=cycles)


def register(coord: LiveCoordinator, *sites: str) -> dict[str, site_pb2_grpc.SiteServiceStub]:
    stubs = {}
    for s in sites:
        stub = coord.site(s)
        resp = stub.Register(site_pb2.RegisterRequest(software_version="test"))
        assert resp.site_id == s
        assert resp.federation == "testfed"
        stubs[s] = stub
    return stubs


def next_assignment(stub: site_pb2_grpc.SiteServiceStub) -> site_pb2.Assignment:
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=10)
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def upload_bytes(
    stub: site_pb2_grpc.SiteServiceStub, run_id: str, hop: int, data: bytes, tmp: Path
) -> BlobRef:
    path = tmp / f"out-{hop}"
    path.write_bytes(data)
    return transfer.upload(stub, run_id=run_id, hop_index=hop, source=path)


def complete(
    stub: site_pb2_grpc.SiteServiceStub, run_id: str, hop: int, ref: BlobRef, acc: float
) -> None:
    stub.CompleteHop(
        site_pb2.CompleteHopRequest(
            run_id=run_id,
            hop_index=hop,
            output=common_pb2.BlobRef(blob_id=ref.blob_id, size=ref.size),
            metrics_before={"accuracy": acc - 0.1},
            metrics_after={"accuracy": acc},
            num_examples=10,
        )
    )


def test_site_identity_comes_from_the_certificate(coordinator: LiveCoordinator) -> None:
    register(coordinator, "site-a")
    sites = coordinator.admin().ListSites(admin_pb2.ListSitesRequest()).sites
    assert [(s.site_id, s.online) for s in sites] == [("site-a", True)]


def test_site_certificate_cannot_call_the_admin_service(coordinator: LiveCoordinator) -> None:
    stub = coordinator.admin("site-a")
    with pytest.raises(grpc.RpcError) as err:
        stub.ListRuns(admin_pb2.ListRunsRequest())
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "not authorized"


def test_admin_certificate_cannot_call_the_site_service(coordinator: LiveCoordinator) -> None:
    stub = site_pb2_grpc.SiteServiceStub(coordinator.channel("owner"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Register(site_pb2.RegisterRequest())
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_run_plan_naming_unregistered_site_is_refused(coordinator: LiveCoordinator) -> None:
    register(coordinator, "site-a")
    with pytest.raises(grpc.RpcError) as err:
        coordinator.admin().CreateRun(
            admin_pb2.CreateRunRequest(plan_toml=plan(["site-a", "site-b"]))
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "never registered: site-b" in (err.value.details() or "")


def test_unknown_model_in_plan_is_refused(coordinator: LiveCoordinator) -> None:
    register(coordinator, "site-a")
    bad = plan(["site-a"]).replace('"logreg"', '"resnet9000"')
    with pytest.raises(grpc.RpcError) as err:
        coordinator.admin().CreateRun(admin_pb2.CreateRunRequest(plan_toml=bad))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown model 'resnet9000'" in (err.value.details() or "")


def test_two_site_run_relays_bytes_hop_to_hop(coordinator: LiveCoordinator, tmp_path: Path) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    admin = coordinator.admin()
    run = admin.CreateRun(
        admin_pb2.CreateRunRequest(plan_toml=plan(["site-a", "site-b"], cycles=2))
    ).run
    assert run.total_hops == 4
    blobs: list[bytes] = []
    for hop in range(4):
        site = ("site-a", "site-b")[hop % 2]
        a = next_assignment(stubs[site])
        assert (a.run_id, a.hop_index, a.cycle) == (run.run_id, hop, hop // 2)
        if hop == 0:
            assert not a.input.blob_id
        else:
            dest = tmp_path / f"in-{hop}"
            ref = BlobRef(blob_id=a.input.blob_id, size=a.input.size)
            transfer.download(stubs[site], run_id=run.run_id, hop_index=hop, blob=ref, dest=dest)
            assert dest.read_bytes() == blobs[-1]
            assert a.previous_site_id == ("site-a", "site-b")[(hop - 1) % 2]
        nxt = stubs[site].GetNextHop(site_pb2.GetNextHopRequest(run_id=run.run_id, hop_index=hop))
        if hop == 3:
            assert nxt.final
        else:
            assert (nxt.site_id, nxt.hop_index) == (("site-a", "site-b")[(hop + 1) % 2], hop + 1)
            assert "BEGIN CERTIFICATE" in nxt.certificate_pem
        data = f"model after hop {hop}".encode() * 100
        blobs.append(data)
        complete(
            stubs[site],
            run.run_id,
            hop,
            upload_bytes(stubs[site], run.run_id, hop, data, tmp_path),
            0.5 + hop / 10,
        )
    final = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert final.state == common_pb2.RUN_STATE_SUCCEEDED
    assert [h.site_id for h in final.hops] == ["site-a", "site-b", "site-a", "site-b"]
    assert [h.metrics_after["accuracy"] for h in final.hops] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    fetched = b"".join(
        c.data for c in admin.FetchResult(admin_pb2.FetchResultRequest(run_id=run.run_id))
    )
    assert fetched == blobs[-1]
    kinds = [
        e.kind for e in admin.WatchRun(admin_pb2.WatchRunRequest(run_id=run.run_id), timeout=10)
    ]
    assert kinds[0] == admin_pb2.EVENT_KIND_RUN_CREATED
    assert kinds[-1] == admin_pb2.EVENT_KIND_RUN_SUCCEEDED
    assert kinds.count(admin_pb2.EVENT_KIND_HOP_COMPLETED) == 4


def test_site_cannot_act_on_another_sites_hop(coordinator: LiveCoordinator, tmp_path: Path) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    run = (
        coordinator.admin()
        .CreateRun(admin_pb2.CreateRunRequest(plan_toml=plan(["site-a", "site-b"])))
        .run
    )
    with pytest.raises(grpc.RpcError) as err:
        upload_bytes(stubs["site-b"], run.run_id, 0, b"forged", tmp_path)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stubs["site-b"].FailHop(site_pb2.FailHopRequest(run_id=run.run_id, hop_index=0, reason="x"))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_failed_hop_fails_the_run_with_the_reason(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a")
    admin = coordinator.admin()
    run = admin.CreateRun(admin_pb2.CreateRunRequest(plan_toml=plan(["site-a"]))).run
    stubs["site-a"].FailHop(
        site_pb2.FailHopRequest(
            run_id=run.run_id, hop_index=0, reason="data_error", message="schema mismatch"
        )
    )
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_FAILED
    assert got.error == "hop 0 at site-a failed: data_error: schema mismatch"
    assert got.hops[0].state == common_pb2.HOP_STATE_FAILED


def test_model_larger_than_message_limit_arrives_bit_identical(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    run = (
        coordinator.admin()
        .CreateRun(admin_pb2.CreateRunRequest(plan_toml=plan(["site-a", "site-b"])))
        .run
    )
    size = 70 << 20
    assert size > 16 * MAX_MESSAGE_BYTES
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    ref = transfer.upload(stubs["site-a"], run_id=run.run_id, hop_index=0, source=src)
    assert ref.size == size
    complete(stubs["site-a"], run.run_id, 0, ref, 0.9)
    a = next_assignment(stubs["site-b"])
    assert a.input.blob_id == ref.blob_id
    dest = tmp_path / "big.in"
    transfer.download(stubs["site-b"], run_id=run.run_id, hop_index=1, blob=ref, dest=dest)
    assert _sha(dest) == _sha(src)


def test_interrupted_upload_resumes_from_committed_offset(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(admin_pb2.CreateRunRequest(plan_toml=plan(["site-a"]))).run
    data = os.urandom(5 << 20)
    sha = hashlib.sha256(data).hexdigest()
    header = site_pb2.UploadHeader(
        transfer_id="t-1", run_id=run.run_id, hop_index=0, total_size=len(data), sha256=sha
    )

    def broken() -> Iterator[site_pb2.UploadBlobRequest]:
        yield site_pb2.UploadBlobRequest(header=header)
        for off in range(0, 3 << 20, 1 << 20):
            yield site_pb2.UploadBlobRequest(
                chunk=common_pb2.BlobChunk(offset=off, data=data[off : off + (1 << 20)])
            )
        raise ConnectionError("link cut")

    with pytest.raises(grpc.RpcError):
        stubs["site-a"].UploadBlob(broken())
    status = stubs["site-a"].GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-1"))
    assert not status.complete
    offset = status.committed_offset
    assert 0 < offset <= 3 << 20
    assert offset % (1 << 20) == 0

    def resumed() -> Iterator[site_pb2.UploadBlobRequest]:
        h = site_pb2.UploadHeader()
        h.CopyFrom(header)
        h.offset = offset
        yield site_pb2.UploadBlobRequest(header=h)
        for off in range(offset, len(data), 1 << 20):
            yield site_pb2.UploadBlobRequest(
                chunk=common_pb2.BlobChunk(offset=off, data=data[off : off + (1 << 20)])
            )

    resp = stubs["site-a"].UploadBlob(resumed())
    assert resp.blob.blob_id == sha
    assert resp.blob.size == len(data)
    # Another site cannot see (or resume) this site's transfer.
    other = register(coordinator, "site-b")["site-b"]
    assert (
        other.GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-1")).committed_offset
        == 0
    )


def test_upload_with_wrong_hash_is_rejected(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(admin_pb2.CreateRunRequest(plan_toml=plan(["site-a"]))).run
    header = site_pb2.UploadHeader(
        transfer_id="t-2",
        run_id=run.run_id,
        hop_index=0,
        total_size=4,
        sha256=hashlib.sha256(b"abcd").hexdigest(),
    )
    reqs = [
        site_pb2.UploadBlobRequest(header=header),
        site_pb2.UploadBlobRequest(chunk=common_pb2.BlobChunk(offset=0, data=b"abce")),
    ]
    with pytest.raises(grpc.RpcError) as err:
        stubs["site-a"].UploadBlob(iter(reqs))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_health_service_reports_serving(coordinator: LiveCoordinator) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(coordinator.channel("site-a"))
    resp = stub.Check(health_pb2.HealthCheckRequest(service="baton.v1.SiteService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_coordinator_refuses_foreign_ca_and_missing_client_certificate(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    # Same federation name and site name, but issued by a CA the coordinator never pinned.
    create_ca(tmp_path / "rogue-ca", "testfed")
    rogue = issue(
        tmp_path / "rogue-ca",
        tmp_path / "rogue",
        Identity(federation="testfed", kind="site", name="site-a"),
    )
    federation_ca = coordinator.pki.files("site-a").ca.read_bytes()
    forged = grpc.ssl_channel_credentials(
        root_certificates=federation_ca,
        private_key=rogue.key.read_bytes(),
        certificate_chain=rogue.cert.read_bytes(),
    )
    anonymous = grpc.ssl_channel_credentials(root_certificates=federation_ca)
    for creds in (forged, anonymous):
        with grpc.secure_channel(coordinator.target, creds) as channel:
            stub = site_pb2_grpc.SiteServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Register(site_pb2.RegisterRequest(), timeout=5)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    # The genuine site still gets in.
    assert (
        coordinator.site("site-a").Register(site_pb2.RegisterRequest(), timeout=5).site_id
        == "site-a"
    )
