"""The site-facing gRPC service: site daemons call it as the identity their certificate proves."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc

from baton.domain import BlobRef
from baton.errors import BlobError, ConfigError, TransportError
from baton.security.identity import Identity
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
from coordinator.api.limits import (
    StreamCaps,
    check_count,
    check_id,
    check_metrics,
    check_text,
    printable,
)
from coordinator.engine.quotas import OverQuota, SiteQuotas
from coordinator.engine.runs import Scheduler
from coordinator.engine.sites import Sites
from coordinator.engine.transfers import Transfers, UploadHeader, transfer_key

logger = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 5.0
"""How often an idle assignment stream re-checks its site's certificate (a client that goes
away ends the stream at once, through the call's done callback)."""
WATCH_RECHECK_SECONDS = 30.0
"""How often an idle stream re-reads the site's assignments even if nothing changed
(a replaced CRL may refuse a recipient without any state change)."""


class SiteService(site_pb2_grpc.SiteServiceServicer):
    """Implements ``baton.v1.SiteService``: identity from the TLS peer, then the engine.

    Args:
        scheduler: The run engine.
        sites: The site registry.
        transfers: Blob uploads and downloads.
        gate: Admits this federation's sites whose certificates are not revoked.
        streams: Caps the assignment streams each site (and all) may hold open.
        uploads: Caps the uploads each site (and all) may hold open.
        quotas: The bytes each site may hold at the coordinator (None: no quota).
        follows: Caps the downloads each site (and all) may hold open that wait on a model
            still arriving (cut-through; each may wait ``stall_seconds``); None: uncapped.
    """

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        sites: Sites,
        transfers: Transfers,
        gate: PeerGate,
        streams: StreamCaps,
        uploads: StreamCaps,
        follows: StreamCaps | None = None,
        quotas: SiteQuotas | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._sites = sites
        self._transfers = transfers
        self._site = gate.identify
        self._streams = streams
        self._uploads = uploads
        self._follows = follows
        self._quotas = quotas

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
            software_version=check_text("software_version", request.software_version, 128),
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
        with self._streams.hold(site_id, "assignment streams", context):
            logger.info("site %s is watching for assignments", site_id)
            yield from self._watch(site_id, context)

    def _watch(self, site_id: str, context: grpc.ServicerContext) -> Iterator[site_pb2.Assignment]:
        """The site's assignments, read again only when the state changed (or, idle,
        every :data:`WATCH_RECHECK_SECONDS`): an idle stream costs no query per poll."""
        journal = self._scheduler.journal
        ended = threading.Event()
        context.add_callback(lambda: journal.end(ended))
        sent: set[tuple[str, int, int]] = set()
        seen, version, read_at = -1, journal.version, 0.0
        while not ended.is_set() and context.is_active():
            if version != seen or time.monotonic() - read_at >= WATCH_RECHECK_SECONDS:
                seen, read_at = version, time.monotonic()
                for assignment in self._scheduler.assignments.for_site(site_id, sent):
                    yield assignment_to_proto(assignment)
            version = journal.wait_for_change(seen, WATCH_POLL_SECONDS, ended=ended)
            self._site(context)  # a certificate revoked meanwhile ends the stream

    def DownloadBlob(
        self, request: site_pb2.DownloadBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.BlobChunk]:
        site_id = self._site(context).name
        offset = request.offset
        check_count("offset", offset)
        follows = self._follows
        for data in self._transfers.download(
            site_id,
            check_id("run_id", request.run_id),
            request.hop_index,
            offset=offset,
            chunk_size=CHUNK_BYTES,
            hold=None
            if follows is None
            else lambda: follows.hold(site_id, "downloads of arriving models", context),
        ):
            yield common_pb2.BlobChunk(offset=offset, data=data)
            offset += len(data)

    def UploadBlob(
        self, request_iterator: Iterator[site_pb2.UploadBlobRequest], context: grpc.ServicerContext
    ) -> site_pb2.UploadBlobResponse:
        identity = self._site(context)
        with self._uploads.hold(identity.name, "uploads", context):
            return self._upload(identity, request_iterator, context)

    def _upload(
        self,
        identity: Identity,
        request_iterator: Iterator[site_pb2.UploadBlobRequest],
        context: grpc.ServicerContext,
    ) -> site_pb2.UploadBlobResponse:
        request_iterator = _received(request_iterator)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "header":
            raise BlobError("an upload starts with exactly one header")
        h = first.header
        header = UploadHeader(
            run_id=check_id("run_id", h.run_id),
            hop_index=h.hop_index,
            transfer_id=check_id("transfer_id", h.transfer_id),
            total_size=check_count("total_size", h.total_size),
            sha256=check_id("sha256", h.sha256),
            offset=check_count("offset", h.offset),
            manifest=h.manifest,
        )
        if header.manifest:  # refused before any byte is stored, as CompleteHop would
            self._sites.verify_output(
                identity,
                header.run_id,
                header.hop_index,
                BlobRef(blob_id=header.sha256, size=header.total_size),
                header.manifest,
            )
        quotas = self._quotas
        if quotas is None:
            ref = self._transfers.upload(identity.name, header, _chunks(request_iterator))
            return site_pb2.UploadBlobResponse(blob=blob_ref_to_proto(ref))
        key = transfer_key(identity.name, header.transfer_id)
        try:
            quotas.admit(
                identity.name,
                key,
                run_id=header.run_id,
                blob_id=header.sha256,
                size=header.total_size,
            )
        except OverQuota as exc:
            logger.warning("site %s: %s", identity.name, exc.message)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        try:
            ref = self._transfers.upload(identity.name, header, _chunks(request_iterator))
        except BaseException:
            if not self._kept(identity.name, header.transfer_id):
                quotas.forget(key)  # refused or discarded: nothing of it is kept
            raise
        return site_pb2.UploadBlobResponse(blob=blob_ref_to_proto(ref))

    def _kept(self, site_id: str, transfer_id: str) -> bool:
        """Whether anything of an upload that failed is kept (stored, or to resume)."""
        try:
            return self._transfers.upload_status(site_id, transfer_id) != (0, None)
        except Exception:  # cannot tell: keep counting it, to be safe
            return True

    def GetUploadStatus(
        self, request: site_pb2.GetUploadStatusRequest, context: grpc.ServicerContext
    ) -> site_pb2.GetUploadStatusResponse:
        site_id = self._site(context).name
        committed, done = self._transfers.upload_status(
            site_id, check_id("transfer_id", request.transfer_id)
        )
        if done is not None:
            return site_pb2.GetUploadStatusResponse(
                committed_offset=committed, complete=True, blob=blob_ref_to_proto(done)
            )
        return site_pb2.GetUploadStatusResponse(committed_offset=committed)

    def ReportMetrics(
        self, request: site_pb2.ReportMetricsRequest, context: grpc.ServicerContext
    ) -> site_pb2.ReportMetricsResponse:
        site_id = self._site(context).name
        run_id = check_id("run_id", request.run_id)
        stage = check_text("stage", request.stage, 64)
        metrics = check_metrics("metrics", request.metrics)
        if stage == EVALUATION_STAGE:
            self._scheduler.evaluations.record(site_id, run_id, metrics)
        else:
            self._scheduler.progress(site_id, run_id, request.hop_index, stage, metrics)
        return site_pb2.ReportMetricsResponse()

    def CompleteHop(
        self, request: site_pb2.CompleteHopRequest, context: grpc.ServicerContext
    ) -> site_pb2.CompleteHopResponse:
        identity = self._site(context)
        run_id = check_id("run_id", request.run_id)
        metrics_before = check_metrics("metrics_before", request.metrics_before)
        metrics_after = check_metrics("metrics_after", request.metrics_after)
        check_id("output.blob_id", request.output.blob_id)
        output = blob_ref_from_proto(request.output)
        if output is None:
            raise BlobError("a completed hop must name its output blob")
        check_count("num_examples", request.num_examples)
        if not 0 <= request.train_seconds < 1e9:
            raise ConfigError("train_seconds must be between 0 and 1e9")
        self._sites.verify_output(
            identity, run_id, request.hop_index, output, request.output_manifest
        )
        self._scheduler.complete_hop(
            identity.name,
            run_id,
            request.hop_index,
            output=output,
            metrics_before=metrics_before,
            metrics_after=metrics_after,
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
            check_id("run_id", request.run_id),
            request.hop_index,
            reason=check_text("reason", request.reason, 64),
            message=printable(request.message[:500]),
        )
        return site_pb2.FailHopResponse()


def _received(
    requests: Iterator[site_pb2.UploadBlobRequest],
) -> Iterator[site_pb2.UploadBlobRequest]:
    """The requests of a client stream; a client that cancels or goes away ends it with a
    TransportError (an expected event, not a server fault)."""
    try:
        yield from requests
    except grpc.RpcError:
        raise TransportError("the upload stream was cancelled by the client") from None


def _chunks(requests: Iterator[site_pb2.UploadBlobRequest]) -> Iterator[tuple[int, bytes]]:
    """The (offset, data) of each chunk after an upload's header."""
    for req in requests:
        if req.WhichOneof("msg") != "chunk":
            raise BlobError("only chunks may follow the header")
        yield req.chunk.offset, req.chunk.data
