"""The site-facing gRPC service: site daemons call it as the identity their certificate proves."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from baton.errors import BlobError
from baton.security.tls import peer_certificate_pem
from baton.v1 import common_pb2, site_pb2, site_pb2_grpc
from baton.wire.channel import CHUNK_BYTES, EVALUATION_STAGE
from baton.wire.serde import (
    assignment_to_proto,
    blob_ref_from_proto,
    blob_ref_to_proto,
    capabilities_from_proto,
    profile_from_proto,
)
from coordinator.api.auth import PeerGate
from coordinator.engine.runs import Scheduler
from coordinator.engine.sites import Sites
from coordinator.engine.transfers import Transfers, UploadHeader

logger = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 1.0
"""How often an idle assignment stream re-checks that its client is still there."""


class SiteService(site_pb2_grpc.SiteServiceServicer):
    """Implements ``baton.v1.SiteService``: identity from the TLS peer, then the engine.

    Args:
        scheduler: The run engine.
        sites: The site registry.
        transfers: Blob uploads and downloads.
        gate: Admits this federation's sites whose certificates are not revoked.
    """

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        sites: Sites,
        transfers: Transfers,
        gate: PeerGate,
    ) -> None:
        self._scheduler = scheduler
        self._sites = sites
        self._transfers = transfers
        self._site = gate.identify

    def Register(
        self, request: site_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> site_pb2.RegisterResponse:
        identity = self._site(context)
        self._sites.register(
            identity,
            certificate_pem=peer_certificate_pem(context).decode("ascii"),
            signing_certificate_pem=request.signing_certificate_pem,
            encryption_certificate_pem=request.encryption_certificate_pem,
            capabilities=capabilities_from_proto(request.capabilities),
            profile=profile_from_proto(request.profile),
            software_version=request.software_version,
        )
        return site_pb2.RegisterResponse(
            site_id=identity.name,
            federation=identity.federation,
            lease_seconds=self._sites.lease_seconds,
        )

    def Heartbeat(
        self, request: site_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> site_pb2.HeartbeatResponse:
        expires = self._sites.heartbeat(self._site(context).name)
        return site_pb2.HeartbeatResponse(lease_expires_unix_ms=expires)

    def WatchAssignments(
        self, request: site_pb2.WatchAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[site_pb2.Assignment]:
        site_id = self._site(context).name
        self._sites.require_registered(site_id)
        logger.info("site %s is watching for assignments", site_id)
        sent: set[tuple[str, int]] = set()
        version = -1
        while context.is_active():
            version = self._scheduler.journal.wait_for_change(version, WATCH_POLL_SECONDS)
            self._site(context)  # a certificate revoked meanwhile ends the stream
            for assignment in self._scheduler.assignments.for_site(site_id, sent):
                sent.add((assignment.run_id, assignment.hop_index))
                yield assignment_to_proto(assignment)

    def DownloadBlob(
        self, request: site_pb2.DownloadBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.BlobChunk]:
        site_id = self._site(context).name
        offset = request.offset
        for data in self._transfers.download(
            site_id, request.run_id, request.hop_index, offset=offset, chunk_size=CHUNK_BYTES
        ):
            yield common_pb2.BlobChunk(offset=offset, data=data)
            offset += len(data)

    def UploadBlob(
        self, request_iterator: Iterator[site_pb2.UploadBlobRequest], context: grpc.ServicerContext
    ) -> site_pb2.UploadBlobResponse:
        site_id = self._site(context).name
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "header":
            raise BlobError("an upload starts with exactly one header")
        h = first.header
        header = UploadHeader(
            run_id=h.run_id,
            hop_index=h.hop_index,
            transfer_id=h.transfer_id,
            total_size=h.total_size,
            sha256=h.sha256,
            offset=h.offset,
        )
        ref = self._transfers.upload(site_id, header, _chunks(request_iterator))
        return site_pb2.UploadBlobResponse(blob=blob_ref_to_proto(ref))

    def GetUploadStatus(
        self, request: site_pb2.GetUploadStatusRequest, context: grpc.ServicerContext
    ) -> site_pb2.GetUploadStatusResponse:
        site_id = self._site(context).name
        committed, done = self._transfers.upload_status(site_id, request.transfer_id)
        if done is not None:
            return site_pb2.GetUploadStatusResponse(
                committed_offset=committed, complete=True, blob=blob_ref_to_proto(done)
            )
        return site_pb2.GetUploadStatusResponse(committed_offset=committed)

    def ReportMetrics(
        self, request: site_pb2.ReportMetricsRequest, context: grpc.ServicerContext
    ) -> site_pb2.ReportMetricsResponse:
        site_id = self._site(context).name
        if request.stage == EVALUATION_STAGE:
            self._scheduler.evaluations.record(site_id, request.run_id, dict(request.metrics))
        else:
            self._scheduler.progress(
                site_id, request.run_id, request.hop_index, request.stage, dict(request.metrics)
            )
        return site_pb2.ReportMetricsResponse()

    def CompleteHop(
        self, request: site_pb2.CompleteHopRequest, context: grpc.ServicerContext
    ) -> site_pb2.CompleteHopResponse:
        identity = self._site(context)
        output = blob_ref_from_proto(request.output)
        if output is None:
            raise BlobError("a completed hop must name its output blob")
        self._sites.verify_output(
            identity, request.run_id, request.hop_index, output, request.output_manifest
        )
        self._scheduler.complete_hop(
            identity.name,
            request.run_id,
            request.hop_index,
            output=output,
            metrics_before=dict(request.metrics_before),
            metrics_after=dict(request.metrics_after),
            num_examples=request.num_examples,
            train_seconds=request.train_seconds,
            output_manifest=request.output_manifest,
        )
        return site_pb2.CompleteHopResponse()

    def FailHop(
        self, request: site_pb2.FailHopRequest, context: grpc.ServicerContext
    ) -> site_pb2.FailHopResponse:
        self._scheduler.fail_hop(
            self._site(context).name,
            request.run_id,
            request.hop_index,
            reason=request.reason[:64],
            message=request.message[:500],
        )
        return site_pb2.FailHopResponse()


def _chunks(requests: Iterator[site_pb2.UploadBlobRequest]) -> Iterator[tuple[int, bytes]]:
    """The (offset, data) of each chunk after an upload's header."""
    for req in requests:
        if req.WhichOneof("msg") != "chunk":
            raise BlobError("only chunks may follow the header")
        yield req.chunk.offset, req.chunk.data
