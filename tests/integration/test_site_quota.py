"""Per-site quotas at a live coordinator: an upload that would take a site past
``site_quota_bytes`` is refused before a byte is stored, with the quota, the site's usage
and what frees space; one that fits passes; a run that ends stops counting, and the
garbage collector then frees its blobs on disk.

Real coordinator (in process, real gRPC and mTLS, real SQLite and blob store).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from baton.v1 import admin_pb2, common_pb2, site_pb2
from coordinator.retention import collect_garbage
from tests.conftest import Pki, live_coordinator
from tests.integration.sites import (
    create_request,
    next_hop,
    plan,
    seal_and_complete,
    start_run,
    upload_bytes,
)

QUOTA = 16_384
"""Bytes one site may hold in these tests (and the largest blob)."""


def _refusal(size: int, held: int) -> str:
    return (
        f"upload of {size} bytes refused: site site-a holds {held} bytes at the coordinator "
        f"and its quota (site_quota_bytes) is {QUOTA}; space is freed as its runs end (their "
        "blobs are then garbage-collected)"
    )


def test_an_upload_past_the_quota_is_refused_until_a_run_ends(pki: Pki, tmp_path: Path) -> None:
    with live_coordinator(
        pki,
        tmp_path / "state",
        lease_seconds=5.0,
        site_quota_bytes=QUOTA,
        max_blob_bytes=QUOTA,
        gc_interval_seconds=0.0,
    ) as coord:
        quotas = coord.server.quotas
        stubs, digest, first = start_run(coord, "site-a", "site-b")
        source = tmp_path / "model.bin"
        source.write_bytes(os.urandom(4000))
        hop = next_hop(stubs["site-a"])
        held, _ = seal_and_complete(
            coord,
            stubs["site-a"],
            sender="site-a",
            recipient="site-b",
            run_id=first,
            hop=hop.hop_index,
            source=source,
            previous=digest,
            plan_digest=digest,
        )
        assert quotas.usage("site-a") == held.size  # its sealed output, while the run runs
        assert quotas.usage("site-b") == 0

        second = coord.admin().CreateRun(create_request(pki, plan(["site-a", "site-b"]))).run
        assert next_hop(stubs["site-a"]).run_id == second.run_id
        room = QUOTA - held.size
        with pytest.raises(grpc.RpcError) as refused:
            upload_bytes(stubs["site-a"], second.run_id, 0, os.urandom(room + 1), tmp_path)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == _refusal(room + 1, held.size)
        assert not list((coord.server.blobs.root / "partial").iterdir())  # nothing stored
        assert quotas.usage("site-a") == held.size

        fits = upload_bytes(stubs["site-a"], second.run_id, 0, os.urandom(room), tmp_path)
        assert fits.size == room
        assert quotas.usage("site-a") == QUOTA
        with pytest.raises(grpc.RpcError) as full:
            upload_bytes(stubs["site-a"], second.run_id, 0, b"x", tmp_path)
        assert (full.value.code(), full.value.details()) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            _refusal(1, QUOTA),
        )

        coord.admin().CancelRun(admin_pb2.CancelRunRequest(run_id=first))
        assert quotas.usage("site-a") == room  # the ended run's output counts no more
        [blob] = (coord.server.blobs.root / "sha256").rglob(held.blob_id)
        old = time.time() - 7200  # older than the grace; the second run's blob is not
        os.utime(blob, (old, old))
        report = collect_garbage(coord.server.store, coord.server.blobs.root, grace_seconds=3600)
        assert (report.blobs, report.bytes_freed) == (1, held.size)
        assert not blob.exists()
        assert coord.server.blobs.exists(fits.blob_id)

        again = upload_bytes(stubs["site-a"], second.run_id, 0, os.urandom(held.size), tmp_path)
        assert again.size == held.size
        assert quotas.usage("site-a") == QUOTA


def test_a_partial_upload_still_counts_after_a_coordinator_restart(
    pki: Pki, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {
        "lease_seconds": 5.0,
        "site_quota_bytes": QUOTA,
        "max_blob_bytes": QUOTA,
    }
    with live_coordinator(pki, tmp_path / "state", **settings) as coord:
        stubs, _, run_id = start_run(coord, "site-a", "site-b")
        assert next_hop(stubs["site-a"]).run_id == run_id
        header = site_pb2.UploadHeader(
            transfer_id="t-1", run_id=run_id, hop_index=0, total_size=QUOTA - 100,
            sha256="0" * 64,
        )  # fmt: skip
        requests = [
            site_pb2.UploadBlobRequest(header=header),
            site_pb2.UploadBlobRequest(chunk=common_pb2.BlobChunk(offset=0, data=b"x" * 500)),
        ]
        with pytest.raises(grpc.RpcError):  # the stream ends early: kept, to resume
            stubs["site-a"].UploadBlob(iter(requests))
        assert coord.server.quotas.usage("site-a") == QUOTA - 100

    with live_coordinator(pki, tmp_path / "state", **settings) as coord:
        assert coord.server.quotas.usage("site-a") == QUOTA - 100
        with pytest.raises(grpc.RpcError) as refused:
            upload_bytes(coord.site("site-a"), run_id, 0, os.urandom(101), tmp_path)
        assert (refused.value.code(), refused.value.details()) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            _refusal(101, QUOTA - 100),
        )
