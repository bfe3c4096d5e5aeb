"""A full disk under the coordinator's database or blob store, over real mTLS: the call
that hit it is refused as UNAVAILABLE with an ERROR logged, nothing crashes, and the same
call goes through once space returns."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator

import grpc
import pytest

from baton.v1 import admin_pb2, common_pb2, site_pb2
from tests.conftest import LiveCoordinator
from tests.integration.sites import create_request, plan, register

FULL = "the coordinator's storage is full; retry later"
BIG_PLAN = plan(["site-a"]) + "# " + "x" * 100_000 + "\n"
"""A plan that needs many new database pages (a long comment)."""


def _connection(coord: LiveCoordinator) -> sqlite3.Connection:
    conn = coord.server.store._conn  # type: ignore[attr-defined]  # the store's own handle
    assert isinstance(conn, sqlite3.Connection)
    return conn


def test_a_full_database_pauses_the_call_until_space_returns(
    coordinator: LiveCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    register(coordinator, "site-a")
    db = _connection(coordinator)
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    # SQLite's own SQLITE_FULL: the file may not grow by a single page.
    db.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as err:
        coordinator.admin().CreateRun(create_request(coordinator.pki, BIG_PLAN))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, FULL)
    assert "the disk is full (database or disk is full)" in caplog.text
    assert list(coordinator.admin().ListRuns(admin_pb2.ListRunsRequest()).runs) == []
    db.execute("PRAGMA max_page_count = 1073741823")  # space returns
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, BIG_PLAN))
    assert run.run.state == common_pb2.RUN_STATE_RUNNING


def test_a_full_blob_store_pauses_the_upload_until_space_returns(
    coordinator: LiveCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = register(coordinator, "site-a")["site-a"]
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    data = os.urandom(8192)
    header = site_pb2.UploadHeader(
        transfer_id="t-full",
        run_id=run.run_id,
        hop_index=0,
        total_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )

    def upload(offset: int) -> Iterator[site_pb2.UploadBlobRequest]:
        yield site_pb2.UploadBlobRequest(
            header=site_pb2.UploadHeader(
                transfer_id=header.transfer_id, run_id=header.run_id, hop_index=0,
                total_size=header.total_size, sha256=header.sha256, offset=offset,
            )
        )  # fmt: skip
        for off in range(offset, len(data), 4096):
            chunk = common_pb2.BlobChunk(offset=off, data=data[off : off + 4096])
            yield site_pb2.UploadBlobRequest(chunk=chunk)

    real_write = os.write

    def full_blob_disk(fd: int, chunk: bytes) -> int:
        if "/blobs/partial/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, chunk)

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_blob_disk)
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadBlob(upload(0), timeout=10)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, FULL)
    status = stub.GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id="t-full"))
    assert status.committed_offset == 0  # nothing partial kept of the failed chunk
    done = stub.UploadBlob(upload(status.committed_offset), timeout=10)
    assert done.blob.blob_id == hashlib.sha256(data).hexdigest()
