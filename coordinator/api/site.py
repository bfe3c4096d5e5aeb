"""The site-facing gRPC service: site daemons call it as the identity their certificate proves."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator

import grpc

from baton.domain import BlobRef
from baton.errors import BlobError, ConflictError, NotFoundError, PkiError, SealError
from baton.security.audit import AuditLog
from baton.security.manifest import verify_manifest
from baton.security.pki import Identity
from baton.security.sealing import check_party
from baton.security.tls import peer_certificate_pem, require_peer
from baton.v1 import common_pb2, site_pb2, site_pb2_grpc
from baton.wire.channel import CHUNK_BYTES, EVALUATION_STAGE
from baton.wire.serde import (
    assignment_to_proto,
    blob_ref_from_proto,
    blob_ref_to_proto,
    capabilities_from_proto,
    next_hop_to_proto,
    profile_from_proto,
)
from coordinator.blobs import BlobStore
from coordinator.engine.journal import now_ms
from coordinator.engine.runs import Scheduler
from coordinator.store.base import SiteRecord, Store

logger = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 1.0
"""How often an idle assignment stream re-checks that its client is still there."""


class SiteService(site_pb2_grpc.SiteServiceServicer):
    """Implements ``baton.v1.SiteService``.

    Args:
        store: Coordinator state.
        blobs: Model blob store.
        scheduler: The run engine.
        federation: Only certificates of this federation's sites are served.
        ca_pem: The federation CA, to check the sites' application-key certificates.
        lease_seconds: Lease granted per heartbeat.
        max_blob_bytes: Largest blob a site may upload.
        revoked: Whether a certificate (PEM) is revoked; sites presenting one are refused,
            and are never named as a hop's recipient.
        audit: The coordinator's signed audit log (None only in unit tests).
    """

    def __init__(
        self,
        *,
        store: Store,
        blobs: BlobStore,
        scheduler: Scheduler,
        federation: str,
        ca_pem: bytes,
        lease_seconds: float,
        max_blob_bytes: int,
        revoked: Callable[[bytes], bool] = lambda cert_pem: False,
        audit: AuditLog | None = None,
    ) -> None:
        self._audit = audit
        self._store = store
        self._ca_pem = ca_pem
        self._blobs = blobs
        self._scheduler = scheduler
        self._federation = federation
        self._lease_seconds = lease_seconds
        self._max_blob_bytes = max_blob_bytes
        self._revoked = revoked

    def _site(self, context: grpc.ServicerContext) -> Identity:
        identity = require_peer(context, federation=self._federation, kind="site")
        if self._revoked(peer_certificate_pem(context)):
            raise PkiError(f"the TLS certificate of site {identity.name} is revoked")
        return identity

    def _any_revoked(self, *pems: str) -> bool:
        return any(pem and self._revoked(pem.encode()) for pem in pems)

    def _registered_site(self, context: grpc.ServicerContext) -> str:
        site_id = self._site(context).name
        try:
            self._store.get_site(site_id)
        except NotFoundError:
            raise ConflictError(f"site {site_id} must register first", site_id=site_id) from None
        return site_id

    def Register(
        self, request: site_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> site_pb2.RegisterResponse:
        identity = self._site(context)
        pem = peer_certificate_pem(context).decode("ascii")
        # Refuse keys the CA did not certify for this very site: other sites will seal to
        # them and verify with them (they check again against their own pinned CA).
        check_party(
            self._ca_pem,
            request.signing_certificate_pem,
            request.encryption_certificate_pem,
            identity,
        )
        if self._any_revoked(request.signing_certificate_pem, request.encryption_certificate_pem):
            raise PkiError(f"site {identity.name} registered a revoked application certificate")
        now = now_ms()
        self._store.upsert_site(
            SiteRecord(
                site_id=identity.name,
                certificate_pem=pem,
                capabilities=capabilities_from_proto(request.capabilities),
                profile=profile_from_proto(request.profile),
                software_version=request.software_version,
                signing_certificate_pem=request.signing_certificate_pem,
                encryption_certificate_pem=request.encryption_certificate_pem,
                registered_ms=now,
                last_seen_ms=now,
            )
        )
        logger.info(
            "site %s registered (software %s)", identity.name, request.software_version or "?"
        )
        self._record("site_registered", "", detail={"site": identity.name})
        return site_pb2.RegisterResponse(
            site_id=identity.name, federation=identity.federation, lease_seconds=self._lease_seconds
        )

    def Heartbeat(
        self, request: site_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> site_pb2.HeartbeatResponse:
        site_id = self._registered_site(context)
        now = now_ms()
        self._store.touch_site(site_id, now)
        return site_pb2.HeartbeatResponse(
            lease_expires_unix_ms=now + int(self._lease_seconds * 1000)
        )

    def WatchAssignments(
        self, request: site_pb2.WatchAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[site_pb2.Assignment]:
        site_id = self._registered_site(context)
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
        run = self._store.get_run(request.run_id)
        if request.hop_index == run.total_hops and self._scheduler.evaluations.expects(
            site_id, run
        ):
            blob = run.result  # the final model, for the site to evaluate
            if blob is None:
                raise NotFoundError(f"run {run.run_id} has no final model")
        else:
            hop = self._scheduler.hop_for_site(site_id, request.run_id, request.hop_index)
            if hop.input is None:
                raise NotFoundError(f"hop {hop.hop_index} has no input model (it is the first hop)")
            blob = hop.input
        offset = request.offset
        for data in self._blobs.read(blob.blob_id, offset=offset, chunk_size=CHUNK_BYTES):
            yield common_pb2.BlobChunk(offset=offset, data=data)
            offset += len(data)

    def UploadBlob(
        self, request_iterator: Iterator[site_pb2.UploadBlobRequest], context: grpc.ServicerContext
    ) -> site_pb2.UploadBlobResponse:
        site_id = self._site(context).name
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "header":
            raise BlobError("an upload starts with exactly one header")
        header = first.header
        self._scheduler.hop_for_site(site_id, header.run_id, header.hop_index)
        if header.total_size > self._max_blob_bytes:
            raise BlobError(
                f"blob of {header.total_size} bytes exceeds the limit of {self._max_blob_bytes}"
            )
        key = self._transfer_key(site_id, header.transfer_id)
        committed = self._blobs.committed(key)
        if header.offset != committed:
            raise ConflictError(f"upload must resume at offset {committed}, not {header.offset}")
        for req in request_iterator:
            if req.WhichOneof("msg") != "chunk":
                raise BlobError("only chunks may follow the header")
            if committed + len(req.chunk.data) > header.total_size:
                self._blobs.abort(key)
                raise BlobError("upload is longer than its declared size")
            committed = self._blobs.append(key, req.chunk.offset, req.chunk.data)
        if committed < header.total_size:
            # The stream ended early (a cut link, a cancelled call): keep what arrived, so
            # the upload resumes from here; finishing would discard it as a size mismatch.
            raise ConflictError(
                f"upload ended after {committed} of {header.total_size} bytes; "
                f"resume at offset {committed}"
            )
        ref = self._blobs.finish(
            key, expected_sha256=header.sha256, expected_size=header.total_size
        )
        return site_pb2.UploadBlobResponse(blob=blob_ref_to_proto(ref))

    def GetUploadStatus(
        self, request: site_pb2.GetUploadStatusRequest, context: grpc.ServicerContext
    ) -> site_pb2.GetUploadStatusResponse:
        key = self._transfer_key(self._site(context).name, request.transfer_id)
        done = self._blobs.finished(key)
        if done is not None:
            return site_pb2.GetUploadStatusResponse(
                committed_offset=done.size, complete=True, blob=blob_ref_to_proto(done)
            )
        return site_pb2.GetUploadStatusResponse(committed_offset=self._blobs.committed(key))

    def GetNextHop(
        self, request: site_pb2.GetNextHopRequest, context: grpc.ServicerContext
    ) -> site_pb2.NextHop:
        site_id = self._site(context).name
        return next_hop_to_proto(
            self._scheduler.next_hop(site_id, request.run_id, request.hop_index)
        )

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
        site_id = self._site(context).name
        output = blob_ref_from_proto(request.output)
        if output is None:
            raise BlobError("a completed hop must name its output blob")
        try:
            self._check_manifest(site_id, request, output)
        except SealError as exc:
            self._record(
                "manifest_rejected",
                request.run_id,
                hop=request.hop_index,
                detail={"site": site_id, "check": exc.reason},
            )
            raise
        self._scheduler.complete_hop(
            site_id,
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

    def _check_manifest(
        self, site_id: str, request: site_pb2.CompleteHopRequest, output: BlobRef
    ) -> None:
        """Refuses garbage early: the manifest must be signed by the calling site's certified
        key and describe exactly this hop and this blob. (The coordinator holds no key that
        opens the blob; recipients check everything again.)"""
        site = self._store.get_site(site_id)
        identity = Identity(federation=self._federation, kind="site", name=site_id)
        keys = check_party(
            self._ca_pem, site.signing_certificate_pem, site.encryption_certificate_pem, identity
        )
        manifest = verify_manifest(request.output_manifest, sender_key=keys.signing_key)
        if (manifest.run_id, manifest.hop_index, manifest.sender) != (
            request.run_id,
            request.hop_index,
            identity.spiffe_id,
        ):
            raise SealError("wrong_context", "the manifest describes another hop or sender")
        if (manifest.ciphertext_sha256, manifest.ciphertext_length) != (
            output.blob_id,
            output.size,
        ):
            raise SealError("ciphertext_hash", "the manifest describes another blob")

    def FailHop(
        self, request: site_pb2.FailHopRequest, context: grpc.ServicerContext
    ) -> site_pb2.FailHopResponse:
        site_id = self._site(context).name
        self._scheduler.fail_hop(
            site_id,
            request.run_id,
            request.hop_index,
            reason=request.reason[:64],
            message=request.message[:500],
        )
        return site_pb2.FailHopResponse()

    def _record(
        self, event: str, run_id: str, *, hop: int | None = None, detail: dict[str, str]
    ) -> None:
        if self._audit is not None:
            self._audit.append(event, run_id=run_id, hop=hop, detail=detail)

    @staticmethod
    def _transfer_key(site_id: str, transfer_id: str) -> str:
        # Scoped to the site, so one site can never touch another's partial upload.
        if not transfer_id or len(transfer_id) > 128:
            raise BlobError("transfer_id must be 1-128 characters")
        return hashlib.sha256(f"{site_id}/{transfer_id}".encode()).hexdigest()
