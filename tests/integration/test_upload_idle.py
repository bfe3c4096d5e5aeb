"""An upload stream that stalls is ended after the configured idle time, over real mTLS:
its slot comes back, and the site sees the call end."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from baton.v1 import common_pb2, site_pb2, site_pb2_grpc
from tests.conftest import LiveCoordinator, Pki, live_coordinator
from tests.integration.sites import create_request, plan, register

IDLE_S = 0.5


@pytest.fixture
def coord(pki: Pki, tmp_path: Path) -> Iterator[LiveCoordinator]:
    with live_coordinator(pki, tmp_path / "state", upload_idle_seconds=IDLE_S) as live:
        yield live


def wait_for(predicate: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_stalled_upload_releases_its_slot(coord: LiveCoordinator) -> None:
    release = threading.Event()

    def stalled() -> Iterator[site_pb2.UploadBlobRequest]:
        release.wait(20)  # sends nothing, not even its header
        yield from ()

    stub = coord.site("site-c")
    uploads = coord.server.uploads
    try:
        call = stub.UploadBlob.future(stalled(), timeout=20)
        wait_for(lambda: uploads.count("site-c") == 1, 5)
        held = wait_for(lambda: uploads.count("site-c") == 0, 5)
        assert held < 5 * IDLE_S  # released by the idle timeout, not the call's deadline
        with pytest.raises(grpc.RpcError) as err:
            call.result(timeout=5)
        assert err.value.code() is grpc.StatusCode.CANCELLED
        assert coord.server.idle_uploads.open_count() == 0
    finally:
        release.set()


def _upload(
    coord: LiveCoordinator, data: bytes, pause_after: int
) -> tuple[site_pb2_grpc.SiteServiceStub, Iterator[site_pb2.UploadBlobRequest]]:
    """A registered site-a with a hop to upload to, and an upload of ``data`` in 4 chunks,
    one every 0.4 idle times (slower in all than one idle time), that stalls for 3 idle
    times after ``pause_after`` chunks."""
    stub = register(coord, "site-a")["site-a"]
    run = coord.admin().CreateRun(create_request(coord.pki, plan(["site-a"]))).run
    header = site_pb2.UploadHeader(
        transfer_id="t-idle",
        run_id=run.run_id,
        hop_index=0,
        total_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    step = len(data) // 4

    def requests() -> Iterator[site_pb2.UploadBlobRequest]:
        yield site_pb2.UploadBlobRequest(header=header)
        for i, off in enumerate(range(0, len(data), step)):
            if i == pause_after:
                time.sleep(3 * IDLE_S)
            time.sleep(0.4 * IDLE_S)
            chunk = common_pb2.BlobChunk(offset=off, data=data[off : off + step])
            yield site_pb2.UploadBlobRequest(chunk=chunk)

    return stub, requests()


def test_an_upload_that_keeps_sending_is_not_ended(coord: LiveCoordinator) -> None:
    data = os.urandom(4096)
    stub, requests = _upload(coord, data, pause_after=99)
    done = stub.UploadBlob(requests, timeout=10)
    assert (done.blob.blob_id, done.blob.size) == (hashlib.sha256(data).hexdigest(), len(data))


def test_an_upload_stalled_midway_keeps_what_arrived(coord: LiveCoordinator) -> None:
    data = os.urandom(4096)
    stub, requests = _upload(coord, data, pause_after=2)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(requests, timeout=10)
    assert err.value.code() is grpc.StatusCode.CANCELLED
    wait_for(lambda: coord.server.uploads.count("site-a") == 0, 5)
    status = stub.GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-idle"))
    assert (status.committed_offset, status.complete) == (2048, False)
