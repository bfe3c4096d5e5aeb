"""Cut-through hops over real gRPC and mTLS: the next site is offered its hop and downloads
while the hop before still uploads; a cut upload resumes and the hop completes
bit-identical; a run with cut-through ends with the model of a run without."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
import pytest

from baton.ml.codec import load_state_file
from baton.security.sealing import manifest_digest, plan_hash
from baton.v1 import admin_pb2, common_pb2, site_pb2, site_pb2_grpc
from baton.wire.serde import assignment_from_proto
from coordinator.config import TransfersConfig
from site_node import transfer
from site_node.client import GrpcCoordinatorClient
from tests.conftest import live_coordinator
from tests.integration.sites import (
    Sites,
    create_request,
    next_hop,
    open_as,
    plan,
    seal_hop,
    start_run,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import torch

    from baton.domain import Assignment
    from tests.conftest import LiveCoordinator, Pki

CUT = TransfersConfig(cut_through=True, stall_seconds=10.0, max_follows_per_site=1)
PIECE = 1 << 16


def _requests(
    header: site_pb2.UploadHeader, data: bytes, stop: int, *, paused: threading.Event | None
) -> Iterator[site_pb2.UploadBlobRequest]:
    """An upload from ``header.offset`` to ``stop``, in pieces; then holds the stream open
    until ``paused`` is set, if given."""
    yield site_pb2.UploadBlobRequest(header=header)
    for off in range(header.offset, stop, PIECE):
        chunk = common_pb2.BlobChunk(offset=off, data=data[off : min(off + PIECE, stop)])
        yield site_pb2.UploadBlobRequest(chunk=chunk)
    if paused is not None:
        paused.wait(30)


def test_the_next_site_downloads_while_the_upload_arrives_and_a_cut_upload_resumes(
    pki: Pki, tmp_path: Path
) -> None:
    with live_coordinator(pki, tmp_path / "state", lease_seconds=5.0, transfers=CUT) as coord:
        stubs, digest, run_id = start_run(coord, "site-a", "site-b")
        source = tmp_path / "m.bin"
        source.write_bytes(hashlib.sha256(b"w").digest() * 40000)  # 1.28 MB
        sealed = tmp_path / "m.sealed"
        manifest = seal_hop(
            coord.pki, source, sealed, sender="site-a", recipient="site-b",
            run_id=run_id, hop=0, previous=digest, plan_digest=digest,
        )  # fmt: skip
        blob = sealed.read_bytes()
        sha = hashlib.sha256(blob).hexdigest()
        half = len(blob) // 2

        def header(offset: int) -> site_pb2.UploadHeader:
            return site_pb2.UploadHeader(
                transfer_id="t-1", run_id=run_id, hop_index=0, total_size=len(blob),
                sha256=sha, offset=offset, manifest=manifest,
            )  # fmt: skip

        # Site-a sends half its sealed output and holds the stream open.
        held = threading.Event()
        first = stubs["site-a"].UploadBlob.future(_requests(header(0), blob, half, paused=held))
        a = _first_offer(stubs["site-b"], timeout=10)
        assert (a.hop_index, a.input_manifest, a.previous_site_id) == (1, manifest, "site-a")
        assert a.input is not None
        assert (a.input.blob_id, a.input.size) == (sha, len(blob))
        # Nothing is recorded as completed: hop 1 is offered early, hop 0 still in flight.
        hops = coord.server.store.list_hops(run_id)
        assert [h.state.value for h in hops] == ["assigned", "pending"]
        stubs["site-b"].ReportMetrics(  # an early hop's site may report its progress
            site_pb2.ReportMetricsRequest(run_id=run_id, hop_index=1, stage="evaluated")
        )

        got: list[int] = []
        dest = tmp_path / "b.in"
        with ThreadPoolExecutor(1) as pool:
            down = pool.submit(
                transfer.download, stubs["site-b"], run_id=run_id, hop_index=1,
                blob=a.input, dest=dest, progress=got.append,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while (not got or got[-1] < half - PIECE) and time.monotonic() < deadline:
                time.sleep(0.01)
            # Hop 1's download holds the first half before hop 0's upload has ended.
            assert half - PIECE <= got[-1] < len(blob)
            assert not first.done()
            # One download waiting on an arriving blob is all site-b may hold here.
            with pytest.raises(grpc.RpcError) as full:
                next(iter(stubs["site-b"].DownloadBlob(
                    site_pb2.DownloadBlobRequest(run_id=run_id, hop_index=1, offset=0)
                )))  # fmt: skip
            assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert full.value.details() == (
                "site-b already holds 1 open downloads of arriving models; at most 1"
            )
            first.cancel()  # the link of the upload is cut
            committed = (
                stubs["site-a"]
                .GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-1"))
                .committed_offset
            )
            assert 0 < committed < len(blob)
            assert not down.done()
            rest = _requests(header(committed), blob, len(blob), paused=None)
            held.set()
            done = stubs["site-a"].UploadBlob(rest, timeout=30)
            assert (done.blob.blob_id, done.blob.size) == (sha, len(blob))
            down.result(timeout=30)
        assert dest.read_bytes() == blob
        # Hop 1 is assigned only once hop 0 completes, with the same input.
        stubs["site-a"].CompleteHop(
            site_pb2.CompleteHopRequest(
                run_id=run_id, hop_index=0, output=done.blob, output_manifest=manifest
            )
        )
        again = _first_offer(stubs["site-b"], timeout=10)
        assert (again.input, again.input_manifest) == (a.input, manifest)
        assert [h.state.value for h in coord.server.store.list_hops(run_id)] == [
            "completed",
            "assigned",
        ]


def _first_offer(stub: site_pb2_grpc.SiteServiceStub, timeout: float = 60) -> Assignment:
    """The first assignment a new stream of the site sends."""
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=timeout)
    try:
        return assignment_from_proto(next(iter(stream)))
    finally:
        stream.cancel()


def _final_model(coord: LiveCoordinator, sites: Sites, tmp_path: Path) -> dict[str, torch.Tensor]:
    """Runs the two-hop plan with real hop runners (site-b takes its first offer, early
    when the coordinator cuts through) and returns the model the owner opens."""
    admin = coord.admin()
    text = plan(["site-a", "site-b"])
    request = create_request(coord.pki, text)
    digest = plan_hash(text, request.plan_signature)
    run = admin.CreateRun(request).run
    runner_b = sites.runner("site-b")
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(lambda: runner_b.run(_first_offer(sites.stubs["site-b"])))
        assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
        assert second.result(timeout=60)
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_SUCCEEDED, got.error
    hop0, hop1 = got.hops
    sealed = tmp_path / f"owner-{run.run_id}.sealed"
    sealed.write_bytes(b"".join(coord.server.blobs.read(hop1.output.blob_id)))
    opened = open_as(
        coord, "owner", sealed, hop1.output_manifest, sender="site-b", run_id=run.run_id,
        hop=1, previous=manifest_digest(hop0.output_manifest), plan_digest=digest,
    )  # fmt: skip
    return load_state_file(opened)


def test_a_run_with_cut_through_ends_with_the_model_of_a_run_without(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = []
    for name, settings in (("plain", TransfersConfig(cut_through=False)), ("cut", CUT)):
        with live_coordinator(pki, tmp_path / name, lease_seconds=5.0, transfers=settings) as co:
            (tmp_path / f"{name}-sites").mkdir()
            sites = Sites(co, tmp_path / f"{name}-sites")
            if name == "cut":
                _complete_after_the_early_offer(monkeypatch, co)
            try:
                models.append(_final_model(co, sites, tmp_path))
                [run] = co.server.store.list_runs()
                kinds = [
                    (e.kind.value, e.hop_index) for e in co.server.store.list_events(run.run_id)
                ]
                early = kinds.index(("hop_progress", 1)) < kinds.index(("hop_completed", 0))
                assert early is (name == "cut"), kinds  # site-b started hop 1 before hop 0 ended
            finally:
                for log in sites.logs.values():
                    log.close()
    plain, cut = models
    assert set(plain) == set(cut)
    for key, value in plain.items():
        assert value.numpy().tobytes() == cut[key].numpy().tobytes(), key


def _complete_after_the_early_offer(monkeypatch: pytest.MonkeyPatch, co: LiveCoordinator) -> None:
    """Holds site-a's CompleteHop until hop 1 is offered to site-b early: a slow link
    between upload and completion, so the offer provably came before hop 0 completed."""
    journal = co.server.scheduler.journal
    complete = GrpcCoordinatorClient.complete_hop

    def held(self: GrpcCoordinatorClient, *args: object, **kwargs: object) -> object:
        deadline = time.monotonic() + 10
        while not _offered_early(co) and time.monotonic() < deadline:
            journal.wait_for_change(journal.version, 0.05)
        return complete(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GrpcCoordinatorClient, "complete_hop", held)


def _offered_early(co: LiveCoordinator) -> bool:
    store = co.server.store
    return any(
        e.kind.value == "hop_progress" and e.hop_index == 1
        for run in store.list_runs()
        for e in store.list_events(run.run_id)
    )
