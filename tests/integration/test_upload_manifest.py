"""A site may send its signed manifest before the blob (cut-through's first step): the
coordinator verifies it before storing any byte, over real gRPC and mTLS."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import grpc
import pytest

from baton.v1 import common_pb2, site_pb2
from tests.integration.sites import coordinator_audit, seal_hop, start_run

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import LiveCoordinator


def _requests(header: site_pb2.UploadHeader, data: bytes) -> Iterator[site_pb2.UploadBlobRequest]:
    yield site_pb2.UploadBlobRequest(header=header)
    for off in range(0, len(data), 1 << 16):
        chunk = common_pb2.BlobChunk(offset=off, data=data[off : off + (1 << 16)])
        yield site_pb2.UploadBlobRequest(chunk=chunk)


def test_a_manifest_sent_before_the_blob_is_checked_before_any_byte_is_stored(
    coordinator: LiveCoordinator, tmp_path: Path
) -> None:
    stubs, digest, run_id = start_run(coordinator, "site-a", "site-b")
    source = tmp_path / "m.bin"
    source.write_bytes(b"weights" * 30000)

    def seal(signer: str, name: str) -> tuple[bytes, bytes]:
        manifest = seal_hop(
            coordinator.pki,
            source,
            tmp_path / name,
            sender="site-a",
            recipient="site-b",
            run_id=run_id,
            hop=0,
            previous=digest,
            plan_digest=digest,
            signer=signer,
        )
        return (tmp_path / name).read_bytes(), manifest

    blob, manifest = seal("site-a", "good.sealed")
    other, _ = seal("site-a", "other.sealed")  # sealed again: a new key, other bytes
    _, forged = seal("site-b", "forged.sealed")  # site-b's key on site-a's hop

    def header(transfer_id: str, data: bytes, signed: bytes) -> site_pb2.UploadHeader:
        return site_pb2.UploadHeader(
            transfer_id=transfer_id,
            run_id=run_id,
            hop_index=0,
            total_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            manifest=signed,
        )

    a = stubs["site-a"]
    for transfer_id, data, signed in (
        ("t-forged", blob, forged),
        ("t-garbage", blob, b"garbage"),
        ("t-other-blob", other, manifest),
    ):
        with pytest.raises(grpc.RpcError) as err:
            a.UploadBlob(_requests(header(transfer_id, data, signed), data))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "rejected"
        status = a.GetUploadStatus(site_pb2.GetUploadStatusRequest(transfer_id=transfer_id))
        assert (status.committed_offset, status.complete) == (0, False)
    rejected = [e for e in coordinator_audit(coordinator) if e["event"] == "manifest_rejected"]
    assert [e["detail"]["check"] for e in rejected] == [
        "bad_signature",
        "malformed",
        "ciphertext_hash",
    ]

    got = a.UploadBlob(_requests(header("t-good", blob, manifest), blob)).blob
    assert (got.blob_id, got.size) == (hashlib.sha256(blob).hexdigest(), len(blob))
    a.CompleteHop(
        site_pb2.CompleteHopRequest(
            run_id=run_id, hop_index=0, output=got, output_manifest=manifest
        )
    )
    stream = stubs["site-b"].WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=10)
    try:
        offered = next(iter(stream))
    finally:
        stream.cancel()
    assert (offered.hop_index, offered.input_manifest) == (1, manifest)
    down = stubs["site-b"].DownloadBlob(
        site_pb2.DownloadBlobRequest(run_id=run_id, hop_index=1, offset=0)
    )
    assert b"".join(c.data for c in down) == blob
