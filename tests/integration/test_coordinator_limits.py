"""What one certified participant may send and hold, over real gRPC and mTLS: oversized
fields are refused before anything is stored or audited, numbers out of range are
INVALID_ARGUMENT, and streams and uploads are capped per participant."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from baton.v1 import admin_pb2, common_pb2, site_pb2
from tests.conftest import LiveCoordinator
from tests.integration.sites import (
    coordinator_audit,
    create_request,
    next_assignment,
    plan,
    register,
)


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_a_huge_run_id_is_refused_before_it_reaches_the_audit_log(
    coordinator: LiveCoordinator,
) -> None:
    stub = register(coordinator, "site-a")["site-a"]
    entries = len(coordinator_audit(coordinator))
    err = refused(
        lambda: stub.CompleteHop(
            site_pb2.CompleteHopRequest(
                run_id="r" * 3_000_000,
                output=common_pb2.BlobRef(blob_id="0" * 64, size=1),
                output_manifest=b"x",
            )
        )
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "run_id is 3000000 characters long; at most 128"
    assert len(coordinator_audit(coordinator)) == entries


def test_a_metrics_map_too_large_for_any_event_is_refused(coordinator: LiveCoordinator) -> None:
    stubs = register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    too_many = {f"m{i}": float(i) for i in range(65)}
    err = refused(
        lambda: stubs["site-a"].ReportMetrics(
            site_pb2.ReportMetricsRequest(run_id=run.run_id, stage="train", metrics=too_many)
        )
    )
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "metrics has 65 entries; at most 64",
    )
    stored = coordinator.server.store.list_events(run.run_id)
    assert [e.kind.value for e in stored] == ["run_created", "hop_assigned"]


def test_after_seq_out_of_range_is_invalid_argument(coordinator: LiveCoordinator) -> None:
    register(coordinator, "site-a")
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    stream = coordinator.admin().WatchRun(
        admin_pb2.WatchRunRequest(run_id=run.run_id, after_seq=2**64 - 1), timeout=5
    )
    err = refused(lambda: list(stream))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"after_seq must be between 0 and {2**63 - 1}",
    )


def watch(coordinator: LiveCoordinator, site: str) -> Iterator[site_pb2.Assignment]:
    stub = coordinator.site(site)
    return stub.WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=20)


def stall_forever() -> site_pb2.UploadBlobRequest:
    time.sleep(30)
    return site_pb2.UploadBlobRequest()


def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_one_site_holds_at_most_its_share_of_assignment_streams(
    coordinator: LiveCoordinator,
) -> None:
    register(coordinator, "site-a", "site-b")
    caps = coordinator.server.config.max_streams_per_site
    held = [watch(coordinator, "site-a") for _ in range(caps)]
    streams = coordinator.server.streams
    wait_for(lambda: streams.count("site-a") == caps)
    err = refused(lambda: next(iter(watch(coordinator, "site-a"))))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"site-a already holds {caps} open assignment streams; at most {caps}",
    )
    # Another site is served, and the first one's streams are freed when they end.
    coordinator.site("site-b").Heartbeat(site_pb2.HeartbeatRequest(), timeout=2)
    for stream in held:
        stream.cancel()  # type: ignore[attr-defined]
    wait_for(lambda: streams.count("site-a") == 0)
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, plan(["site-a"]))).run
    assert next_assignment(coordinator.site("site-a")).run_id == run.run_id


def test_header_less_uploads_of_one_site_are_capped(coordinator: LiveCoordinator) -> None:
    """An upload that never sends its header holds a slot of its own site only (a site
    that never registered included)."""
    caps = coordinator.server.config.max_uploads_per_site
    stub = coordinator.site("site-c")  # certified, never registered
    stall: list[grpc.Future[site_pb2.UploadBlobResponse]] = []
    never: Iterator[site_pb2.UploadBlobRequest] = iter(stall_forever, None)  # sends nothing
    calls = [stub.UploadBlob.future(never, timeout=20) for _ in range(caps)]
    stall.extend(calls)
    uploads = coordinator.server.uploads
    wait_for(lambda: uploads.count("site-c") == caps)
    err = refused(lambda: stub.UploadBlob(iter(()), timeout=5))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"site-c already holds {caps} open uploads; at most {caps}",
    )
    register(coordinator, "site-a")  # others still register and beat
    coordinator.site("site-a").Heartbeat(site_pb2.HeartbeatRequest(), timeout=2)
    for call in stall:
        call.cancel()
    wait_for(lambda: uploads.count("site-c") == 0)
