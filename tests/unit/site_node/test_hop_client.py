"""The gRPC coordinator client: every call carries a deadline, wire types become domain types,
and gRPC failures become the port's errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from baton.domain import Assignment, BlobRef
from baton.errors import Denied, Rejected, TransportError
from baton.v1 import common_pb2, site_pb2
from site_node import transfer
from site_node.client import GrpcCoordinatorClient, HopDone


class _Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "run is cancelled"


class _Stub:
    """Records each call's request and deadline; answers with empty messages."""

    def __init__(self, fail: grpc.StatusCode | None = None) -> None:
        self.timeouts: dict[str, float | None] = {}
        self.fail = fail
        self.stream = _Stream([site_pb2.Assignment(run_id="r", hop_index=3, cycle=1)])

    def __getattr__(self, name: str) -> Any:
        def call(request: Any, timeout: float | None = None) -> Any:
            self.timeouts[name] = timeout
            if self.fail is not None:
                raise _Failed(self.fail)  # type: ignore[abstract]
            if name == "WatchAssignments":
                return self.stream
            if name == "DownloadBlob":
                return iter([common_pb2.BlobChunk(offset=0, data=b"abc")])
            if name == "UploadBlob":
                list(request)
                return site_pb2.UploadBlobResponse(blob=common_pb2.BlobRef(blob_id=SHA, size=3))
            return getattr(site_pb2, f"{name}Response", site_pb2.NextHop)()

        return call


class _Stream:
    def __init__(self, items: list[site_pb2.Assignment]) -> None:
        self.items = items
        self.cancelled = False

    def __iter__(self) -> Iterator[site_pb2.Assignment]:
        return iter(self.items)

    def cancel(self) -> bool:
        self.cancelled = True
        return True


SHA = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256(b"abc")


def test_every_call_has_a_deadline_and_speaks_domain_types(tmp_path: Path) -> None:
    stub = _Stub()
    client = GrpcCoordinatorClient(stub)  # type: ignore[arg-type]
    client.heartbeat()
    client.report_metrics(run_id="r", hop_index=0, stage="before", metrics={"loss": 1.0})
    ref = BlobRef(blob_id=SHA, size=3)
    client.complete_hop(HopDone(run_id="r", hop_index=0, output=ref, output_manifest=b"m"))
    client.fail_hop(run_id="r", hop_index=0, reason="data_error", message="bad")
    assert client.upload_status("t").complete is False
    client.download(run_id="r", hop_index=1, blob=ref, dest=tmp_path / "in")
    source = tmp_path / "out"
    source.write_bytes(b"abc")
    assert client.upload(run_id="r", hop_index=1, source=source) == ref
    [assignment] = list(client.watch_assignments())

    assert (tmp_path / "in").read_bytes() == b"abc"
    assert assignment == Assignment(
        run_id="r",
        hop_index=3,
        cycle=1,
        total_hops=0,
        plan_toml="",
        plan_signature=b"",
        owner_signing_certificate_pem="",
        owner_encryption_certificate_pem="",
    )
    unary = ("Heartbeat", "ReportMetrics", "CompleteHop", "FailHop", "GetUploadStatus")
    assert {name: stub.timeouts[name] for name in unary} == dict.fromkeys(unary, 30.0)
    for name in ("DownloadBlob", "UploadBlob"):
        assert stub.timeouts[name] == transfer.stream_deadline(3)
    # The long-lived stream is bounded by the channel's keepalive instead.
    assert stub.timeouts["WatchAssignments"] is None


def test_a_transfer_deadline_grows_with_the_bytes_left() -> None:
    assert transfer.stream_deadline(0) == transfer.STREAM_BASE_SECONDS
    gib = 1 << 30
    assert transfer.stream_deadline(gib) == pytest.approx(
        transfer.STREAM_BASE_SECONDS + gib / transfer.STREAM_FLOOR_BYTES_PER_SECOND
    )


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, Denied, "the coordinator refused this site"),
        (grpc.StatusCode.UNAUTHENTICATED, Denied, "the coordinator refused this site"),
        (grpc.StatusCode.UNAVAILABLE, TransportError, "coordinator at c:1 unreachable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, TransportError, "did not answer in time"),
        (grpc.StatusCode.FAILED_PRECONDITION, Rejected, "run is cancelled"),
    ],
)
def test_grpc_failures_become_the_ports_errors(
    code: grpc.StatusCode, error: type[Exception], message: str
) -> None:
    client = GrpcCoordinatorClient(_Stub(fail=code), target="c:1")  # type: ignore[arg-type]

    with pytest.raises(error) as raised:
        client.fail_hop(run_id="r", hop_index=0, reason="x", message="y")

    assert type(raised.value) is error
    assert message in str(raised.value)


def test_cancelling_the_assignment_stream_cancels_the_call() -> None:
    stub = _Stub()
    stream = GrpcCoordinatorClient(stub).watch_assignments()  # type: ignore[arg-type]
    stream.cancel()
    assert stub.stream.cancelled
