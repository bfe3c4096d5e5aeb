"""The coordinator over real gRPC and real mTLS: identities, the hop protocol, blob streaming."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from baton.domain import BlobRef
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import expected_previous, manifest_digest, plan_hash
from baton.v1 import admin_pb2, common_pb2, site_pb2, site_pb2_grpc
from baton.wire.channel import MAX_MESSAGE_BYTES
from site_node import transfer
from tests.conftest import LiveCoordinator
from tests.integration.sites import (
    PROFILE,
    coordinator_audit,
    create_request,
    next_assignment,
    open_as,
    plan,
    register,
    seal_and_complete,
    upload_bytes,
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
        coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a", "site-b"])))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "never registered: site-b" in (err.value.details() or "")


def test_unknown_strategy_in_plan_is_refused(coordinator: LiveCoordinator) -> None:
    register(coordinator, "site-a")
    bad = plan(["site-a"]).replace('strategy = "', 'strategy = "nonsense-')
    with pytest.raises(grpc.RpcError) as err:
        coordinator.admin().CreateRun(create_request(coordinator.pki, bad))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown ordering strategy 'nonsense-" in (err.value.details() or "")


def test_run_over_sites_with_different_schemas_is_refused(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a", "site-b", "site-c")
    keys = coordinator.pki.keys("site-b")
    stubs["site-b"].Register(
        site_pb2.RegisterRequest(
            signing_certificate_pem=keys.signing_cert_pem.decode(),
            encryption_certificate_pem=keys.encryption_cert_pem.decode(),
            profile=common_pb2.DataProfile(schema_hash="f" * 64, task=PROFILE.task),
        )
    )
    request = create_request(coordinator.pki, plan(["site-a", "site-b", "site-c"]))
    with pytest.raises(grpc.RpcError) as err:
        coordinator.admin().CreateRun(request)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        f"sites disagree on the data schema: site-a, site-c hold schema {'0' * 12}; "
        f"site-b holds schema {'f' * 12}; check that every site's feature columns and "
        "classes match"
    )
    assert list(coordinator.admin().ListRuns(admin_pb2.ListRunsRequest()).runs) == []


def test_two_site_run_relays_sealed_bytes_hop_to_hop(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    admin = coordinator.admin()
    text = plan(["site-a", "site-b"], cycles=2)
    request = create_request(coordinator.pki, text)
    digest = plan_hash(text, request.plan_signature)
    run = admin.CreateRun(request).run
    assert run.total_hops == 4
    plaintexts: list[bytes] = []
    manifests: list[bytes] = []
    for hop in range(4):
        site, other = ("site-a", "site-b") if hop % 2 == 0 else ("site-b", "site-a")
        a = next_assignment(stubs[site])
        assert (a.run_id, a.hop_index, a.cycle) == (run.run_id, hop, hop // 2)
        assert a.plan_signature == request.plan_signature
        if hop == 0:
            assert not a.input.blob_id
            assert not a.input_manifest
        else:
            assert a.previous_site_id == other
            assert a.input_manifest == manifests[-1]
            assert a.previous_manifest == (manifests[-2] if hop >= 2 else b"")
            assert (
                a.sender_signing_certificate_pem
                == coordinator.pki.keys(other).signing_cert_pem.decode()
            )
            dest = tmp_path / f"in-{hop}.sealed"
            ref = BlobRef(blob_id=a.input.blob_id, size=a.input.size)
            transfer.download(stubs[site], run_id=run.run_id, hop_index=hop, blob=ref, dest=dest)
            # The relay stored ciphertext: the plaintext is nowhere in it.
            assert plaintexts[-1][:64] not in dest.read_bytes()
            opened = open_as(
                coordinator,
                site,
                dest,
                a.input_manifest,
                sender=other,
                run_id=run.run_id,
                hop=hop - 1,
                previous=expected_previous(digest, a.previous_manifest),
                plan_digest=digest,
            )
            assert opened.read_bytes() == plaintexts[-1]
        nxt = a.next_hop  # the assignment names who receives the hop's output
        recipient = "owner" if hop == 3 else other
        assert nxt.final == (hop == 3)
        if hop < 3:
            assert (nxt.site_id, nxt.hop_index) == (other, hop + 1)
        assert (
            nxt.encryption_certificate_pem
            == coordinator.pki.keys(recipient).encryption_cert_pem.decode()
        )
        source = tmp_path / f"out-{hop}.bin"
        plaintexts.append(f"model after hop {hop} ".encode() * 500)
        source.write_bytes(plaintexts[-1])
        _, manifest = seal_and_complete(
            coordinator,
            stubs[site],
            sender=site,
            recipient=recipient,
            run_id=run.run_id,
            hop=hop,
            source=source,
            previous=manifest_digest(manifests[-1]) if manifests else digest,
            plan_digest=digest,
            acc=0.5 + hop / 10,
        )
        manifests.append(manifest)
    final = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert final.state == common_pb2.RUN_STATE_SUCCEEDED
    assert [h.site_id for h in final.hops] == ["site-a", "site-b", "site-a", "site-b"]
    assert [h.output_manifest for h in final.hops] == manifests
    assert [h.metrics_after["accuracy"] for h in final.hops] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    result = tmp_path / "result.sealed"
    result.write_bytes(
        b"".join(c.data for c in admin.FetchResult(admin_pb2.FetchResultRequest(run_id=run.run_id)))
    )
    opened = open_as(
        coordinator,
        "owner",
        result,
        manifests[-1],
        sender="site-b",
        run_id=run.run_id,
        hop=3,
        previous=manifest_digest(manifests[-2]),
        plan_digest=digest,
    )
    assert opened.read_bytes() == plaintexts[-1]
    kinds = [
        e.kind for e in admin.WatchRun(admin_pb2.WatchRunRequest(run_id=run.run_id), timeout=10)
    ]
    assert kinds[0] == admin_pb2.EVENT_KIND_RUN_CREATED
    assert kinds[-1] == admin_pb2.EVENT_KIND_RUN_SUCCEEDED
    assert kinds.count(admin_pb2.EVENT_KIND_HOP_COMPLETED) == 4
    entries = coordinator_audit(coordinator)
    assert [e["event"] for e in entries] == [
        "site_registered",
        "site_registered",
        "run_created",
        "hop_completed",
        "hop_completed",
        "hop_completed",
        "hop_completed",
        "run_succeeded",
    ]
    assert [e["detail"]["manifest"] for e in entries[3:7]] == [
        manifest_digest(m) for m in manifests
    ]


def test_coordinator_refuses_a_manifest_that_does_not_match(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    text = plan(["site-a", "site-b"])
    request = create_request(coordinator.pki, text)
    digest = plan_hash(text, request.plan_signature)
    run = coordinator.admin().CreateRun(request).run
    source = tmp_path / "m.bin"
    source.write_bytes(b"weights" * 1000)
    # Signed by site-b's key for site-a's hop: the coordinator checks the sender's key.
    sealed = tmp_path / "m.sealed"
    forged = seal_file(
        source,
        sealed,
        ctx=HopContext(
            run_id=run.run_id,
            hop_index=0,
            sender=coordinator.pki.identity("site-a").spiffe_id,
            recipient=coordinator.pki.identity("site-b").spiffe_id,
            previous_manifest_hash=digest,
            plan_hash=digest,
            schema_hash="0" * 64,
        ),
        sender_key=coordinator.pki.keys("site-b").signing_key,
        recipients=[
            RecipientKey(
                spiffe_id=coordinator.pki.identity("site-b").spiffe_id,
                public_key=coordinator.pki.keys("site-b").encryption_key.public_key(),
            )
        ],
    )
    ref = transfer.upload(stubs["site-a"], run_id=run.run_id, hop_index=0, source=sealed)
    for manifest in (forged, b"", b"garbage"):
        with pytest.raises(grpc.RpcError) as err:
            stubs["site-a"].CompleteHop(
                site_pb2.CompleteHopRequest(
                    run_id=run.run_id,
                    hop_index=0,
                    output_manifest=manifest,
                    output=common_pb2.BlobRef(blob_id=ref.blob_id, size=ref.size),
                )
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "rejected"
    rejected = [e for e in coordinator_audit(coordinator) if e["event"] == "manifest_rejected"]
    assert [e["detail"]["check"] for e in rejected] == ["bad_signature", "malformed", "malformed"]
    # The run is unharmed: hop 0 is still assigned and can complete properly.
    got = coordinator.admin().GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_RUNNING
    assert got.hops[0].state == common_pb2.HOP_STATE_ASSIGNED
    seal_and_complete(
        coordinator,
        stubs["site-a"],
        sender="site-a",
        recipient="site-b",
        run_id=run.run_id,
        hop=0,
        source=source,
        previous=digest,
        plan_digest=digest,
    )
    got = coordinator.admin().GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.hops[0].state == common_pb2.HOP_STATE_COMPLETED


def test_registration_without_certified_keys_is_refused(coordinator: LiveCoordinator) -> None:
    other = coordinator.pki.keys("site-b")
    for signing, encryption in (
        ("", ""),
        (other.signing_cert_pem.decode(), other.encryption_cert_pem.decode()),
    ):
        with pytest.raises(grpc.RpcError) as err:
            coordinator.site("site-a").Register(
                site_pb2.RegisterRequest(
                    signing_certificate_pem=signing, encryption_certificate_pem=encryption
                )
            )
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_site_cannot_act_on_another_sites_hop(coordinator: LiveCoordinator, tmp_path: Path) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    run = (
        coordinator.admin()
        .CreateRun(create_request(coordinator.pki, plan(["site-a", "site-b"])))
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
    run = admin.CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    stubs["site-a"].FailHop(
        site_pb2.FailHopRequest(
            run_id=run.run_id, hop_index=0, reason="data_error", message="schema mismatch"
        )
    )
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_FAILED
    assert got.error == "hop 1 at site-a failed: data_error: schema mismatch"
    assert got.hops[0].state == common_pb2.HOP_STATE_FAILED


def test_model_larger_than_message_limit_arrives_bit_identical(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    stubs = register(coordinator, "site-a", "site-b")
    text = plan(["site-a", "site-b"])
    request = create_request(coordinator.pki, text)
    digest = plan_hash(text, request.plan_signature)
    run = coordinator.admin().CreateRun(request).run
    size = 70 << 20
    assert size > 16 * MAX_MESSAGE_BYTES
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    ref, _ = seal_and_complete(
        coordinator,
        stubs["site-a"],
        sender="site-a",
        recipient="site-b",
        run_id=run.run_id,
        hop=0,
        source=src,
        previous=digest,
        plan_digest=digest,
    )
    assert ref.size > size  # ciphertext: the model plus one tag per chunk
    a = next_assignment(stubs["site-b"])
    assert a.input.blob_id == ref.blob_id
    dest = tmp_path / "big.in"
    transfer.download(stubs["site-b"], run_id=run.run_id, hop_index=1, blob=ref, dest=dest)
    opened = open_as(
        coordinator,
        "site-b",
        dest,
        a.input_manifest,
        sender="site-a",
        run_id=run.run_id,
        hop=0,
        previous=digest,
        plan_digest=digest,
    )
    assert _sha(opened) == _sha(src)


def test_an_upload_stream_that_ends_early_keeps_what_arrived(
    coordinator: LiveCoordinator,
) -> None:
    stubs = register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    data = os.urandom(3 << 20)
    header = site_pb2.UploadHeader(
        transfer_id="t-2",
        run_id=run.run_id,
        hop_index=0,
        total_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    # The client's stream closes normally after two of three chunks.
    requests = [site_pb2.UploadBlobRequest(header=header)] + [
        site_pb2.UploadBlobRequest(
            chunk=common_pb2.BlobChunk(offset=off, data=data[off : off + (1 << 20)])
        )
        for off in (0, 1 << 20)
    ]
    with pytest.raises(grpc.RpcError) as err:
        stubs["site-a"].UploadBlob(iter(requests))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "upload ended after 2097152 of 3145728 bytes" in (err.value.details() or "")
    status = stubs["site-a"].GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-2"))
    assert (status.committed_offset, status.complete) == (2 << 20, False)


def test_interrupted_upload_resumes_from_committed_offset(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    data = os.urandom(5 << 20)
    sha = hashlib.sha256(data).hexdigest()
    header = site_pb2.UploadHeader(
        transfer_id="t-1", run_id=run.run_id, hop_index=0, total_size=len(data), sha256=sha
    )

    sent = threading.Event()
    cut = threading.Event()

    def partial() -> Iterator[site_pb2.UploadBlobRequest]:
        yield site_pb2.UploadBlobRequest(header=header)
        for off in range(0, 3 << 20, 1 << 20):
            yield site_pb2.UploadBlobRequest(
                chunk=common_pb2.BlobChunk(offset=off, data=data[off : off + (1 << 20)])
            )
        sent.set()
        cut.wait(30)  # the stream stays open until the test cuts the link

    call = stubs["site-a"].UploadBlob.future(partial())
    assert sent.wait(30)
    # Cut the link only once the coordinator has stored what was sent, so the resume point
    # is known exactly; polling from here never blocks the stream's own sender thread.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = stubs["site-a"].GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-1"))
        if status.committed_offset == 3 << 20:
            break
        time.sleep(0.01)
    call.cancel()
    cut.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    status = stubs["site-a"].GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-1"))
    assert not status.complete
    offset = status.committed_offset
    assert offset == 3 << 20

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
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
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
    assert register(coordinator, "site-a")["site-a"] is not None
