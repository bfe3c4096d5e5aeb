"""The admin gRPC service: what the study owner's and operator's CLI call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from baton.domain import BlobRef
from baton.errors import BlobError, TransportError
from baton.security.manifest import MAX_MANIFEST_BYTES
from baton.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from baton.wire.channel import CHUNK_BYTES
from coordinator.api.auth import PeerGate, require_owner
from coordinator.api.limits import StreamCaps, check_count, check_id, check_text
from coordinator.api.serde import event_to_proto, run_to_proto, site_to_proto
from coordinator.engine.runs import Scheduler
from coordinator.engine.signed_plans import SignedPlan
from coordinator.engine.sites import Sites
from coordinator.engine.start_model import StartModel
from coordinator.engine.transfers import Transfers
from coordinator.store.base import RunState, Store

logger = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 1.0
"""How often an idle event stream re-checks that its client is still there."""


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Implements ``baton.v1.AdminService`` for callers holding an admin certificate.

    Args:
        store: Coordinator state, read for runs and their events.
        scheduler: The run engine.
        sites: The site registry.
        transfers: Blob downloads (a run's result, a hop's output).
        gate: Admits this federation's admins whose certificates are not revoked. Only a
            run's owner (the admin who signed its plan) may cancel it or fetch its hops'
            outputs.
        streams: Caps the event streams each admin (and all) may hold open.
    """

    def __init__(
        self,
        *,
        store: Store,
        scheduler: Scheduler,
        sites: Sites,
        transfers: Transfers,
        gate: PeerGate,
        streams: StreamCaps,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._sites = sites
        self._transfers = transfers
        self._gate = gate
        self._streams = streams

    def _admin(self, context: grpc.ServicerContext) -> str:
        return self._gate.identify(context).name

    def CreateRun(
        self, request: admin_pb2.CreateRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateRunResponse:
        admin = self._admin(context)
        check_text("plan_toml", request.plan_toml, 256 * 1024)
        run = self._scheduler.create_run(request.plan_toml, _signed(request))
        logger.info("admin %s created run %s", admin, run.run_id)
        return admin_pb2.CreateRunResponse(run=run_to_proto(run, self._store.list_hops(run.run_id)))

    def CreateRunFromModel(
        self,
        request_iterator: Iterator[admin_pb2.CreateRunFromModelRequest],
        context: grpc.ServicerContext,
    ) -> admin_pb2.CreateRunResponse:
        admin = self._admin(context)
        requests = iter(request_iterator)
        first = next(requests, None)
        if first is None or first.WhichOneof("msg") != "header":
            raise BlobError("a run with a start model starts with exactly one header")
        h = first.header
        check_text("plan_toml", h.run.plan_toml, 256 * 1024)
        if len(h.manifest) > MAX_MANIFEST_BYTES:
            raise BlobError(f"the start model's manifest exceeds {MAX_MANIFEST_BYTES} bytes")
        start = StartModel(
            run_id=check_id("run_id", h.run_id),
            blob=BlobRef(
                blob_id=check_id("sha256", h.sha256), size=check_count("total_size", h.total_size)
            ),
            manifest=h.manifest,
        )
        with self._streams.hold(f"admin {admin}", "start model uploads", context):
            self._transfers.store_start(admin, start, _start_chunks(requests))
        run = self._scheduler.create_run(h.run.plan_toml, _signed(h.run), start)
        logger.info("admin %s created run %s from a start model", admin, run.run_id)
        return admin_pb2.CreateRunResponse(run=run_to_proto(run, self._store.list_hops(run.run_id)))

    def GetRun(
        self, request: admin_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Run:
        self._admin(context)
        run = self._store.get_run(check_id("run_id", request.run_id))
        return run_to_proto(run, self._store.list_hops(run.run_id))

    def ListRuns(
        self, request: admin_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListRunsResponse:
        self._admin(context)
        return admin_pb2.ListRunsResponse(runs=[run_to_proto(r) for r in self._store.list_runs()])

    def WatchRun(
        self, request: admin_pb2.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.RunEvent]:
        admin = self._admin(context)
        self._store.get_run(check_id("run_id", request.run_id))
        check_count("after_seq", request.after_seq)
        with self._streams.hold(f"admin {admin}", "event streams", context):
            yield from self._watch(request, context)

    def _watch(
        self, request: admin_pb2.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.RunEvent]:
        after = request.after_seq
        version = -1
        while context.is_active():
            # Read the state before the events: a run seen ended has all its events stored.
            ended = self._store.get_run(request.run_id).state is not RunState.RUNNING
            for event in self._store.list_events(request.run_id, after_seq=after):
                yield event_to_proto(event)
                after = event.seq
            if ended:
                return
            version = self._scheduler.journal.wait_for_change(version, WATCH_POLL_SECONDS)
            self._admin(context)  # a certificate revoked meanwhile ends the stream

    def CancelRun(
        self, request: admin_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Run:
        admin = self._gate.identify(context)
        reason = check_text("reason", request.reason, 500)
        run_id = check_id("run_id", request.run_id)
        run = self._store.get_run(run_id)
        require_owner(admin, run.owner_signing_certificate_pem, run_id=run_id)
        run = self._scheduler.cancel_run(run_id, reason or f"cancelled by {admin.name}")
        return run_to_proto(run, self._store.list_hops(run.run_id))

    def FetchResult(
        self, request: admin_pb2.FetchResultRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.BlobChunk]:
        self._admin(context)
        offset = check_count("offset", request.offset)
        run_id = check_id("run_id", request.run_id)
        for data in self._transfers.result(run_id, offset=offset, chunk_size=CHUNK_BYTES):
            yield common_pb2.BlobChunk(offset=offset, data=data)
            offset += len(data)

    def FetchHopOutput(
        self, request: admin_pb2.FetchHopOutputRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.BlobChunk]:
        admin = self._gate.identify(context)
        offset = check_count("offset", request.offset)
        run_id = check_id("run_id", request.run_id)
        run = self._store.get_run(run_id)
        require_owner(
            admin, run.owner_signing_certificate_pem, run_id=run_id, action="fetch its hops"
        )
        stream = self._transfers.hop_output(
            run_id, request.hop_index, offset=offset, chunk_size=CHUNK_BYTES
        )
        for data in stream:
            yield common_pb2.BlobChunk(offset=offset, data=data)
            offset += len(data)

    def ListSites(
        self, request: admin_pb2.ListSitesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListSitesResponse:
        self._admin(context)
        return admin_pb2.ListSitesResponse(
            sites=[site_to_proto(s, online=online) for s, online in self._sites.listing()]
        )


def _signed(request: admin_pb2.CreateRunRequest) -> SignedPlan:
    """The owner's signature and certificates a run request carries."""
    return SignedPlan(
        signature=request.plan_signature,
        owner_signing_pem=request.owner_signing_certificate_pem,
        owner_encryption_pem=request.owner_encryption_certificate_pem,
    )


def _start_chunks(
    requests: Iterator[admin_pb2.CreateRunFromModelRequest],
) -> Iterator[tuple[int, bytes]]:
    """The (offset, data) of each chunk after the header of a run with a start model."""
    try:
        for req in requests:
            if req.WhichOneof("msg") != "chunk":
                raise BlobError("only chunks may follow the header")
            yield req.chunk.offset, req.chunk.data
    except grpc.RpcError:
        raise TransportError("the start model's stream was cancelled by the client") from None
