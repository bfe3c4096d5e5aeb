"""The site's port to the coordinator: every SiteService call the site makes, in domain types.

Business logic (:mod:`site_node.hop`, :mod:`site_node.daemon`) talks to the coordinator only
through :class:`CoordinatorClient`. :class:`GrpcCoordinatorClient` implements it over mTLS
gRPC; :class:`site_node.fake_client.FakeCoordinatorClient` implements it in memory for tests.

Errors (every implementation; :mod:`site_node.retry` says which status is which):
    Denied: The coordinator refused this site (``PERMISSION_DENIED`` or
        ``UNAUTHENTICATED``): its certificate is not (or no longer) acceptable, or the call
        concerned another site's hop. Retrying does not help; the daemon stops.
    Rejected: The coordinator answered and refused the call for good (``NOT_FOUND``,
        ``FAILED_PRECONDITION``, ``INVALID_ARGUMENT``, ...): the input blob is gone, the
        blob store cannot take the upload, the hop is no longer the site's, the run was
        cancelled. The hop fails once with a reason; it is not retried.
    TransportError: The call may succeed later: the coordinator was unreachable, did not
        answer within the call's deadline, or was busy. The site reconnects with back-off
        and the coordinator re-delivers.
    BlobError: A transfer's bytes are out of order, truncated, or do not match their hash.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from baton.domain import Assignment, BlobRef, Capabilities, DataProfile
from baton.errors import Denied, Rejected, ServerFault, TransportError
from baton.security.preflight import unreachable
from baton.v1 import site_pb2, site_pb2_grpc
from baton.wire.serde import (
    assignment_from_proto,
    blob_ref_from_proto,
    blob_ref_to_proto,
    capabilities_to_proto,
    profile_to_proto,
)
from site_node import transfer
from site_node.retry import failure_class, is_server_fault

logger = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = transfer.RPC_TIMEOUT_SECONDS
"""Deadline of every unary call; transfers get a deadline from their size
(:func:`site_node.transfer.stream_deadline`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Announcement:
    """What a site tells the coordinator when it registers."""

    capabilities: Capabilities
    profile: DataProfile
    software_version: str
    signing_certificate_pem: str
    """PEM certificate of the site's Ed25519 signing key."""
    encryption_certificate_pem: str
    """PEM certificate of the site's X25519 encryption key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Registration:
    """The coordinator's answer to a registration."""

    site_id: str
    """The site id the coordinator derived from the site's TLS certificate."""
    federation: str
    lease_seconds: float
    """How long the lease lasts without a heartbeat."""


@dataclass(frozen=True, kw_only=True, slots=True)
class UploadStatus:
    """How much of an upload the coordinator has durably stored."""

    committed_offset: int
    complete: bool
    blob: BlobRef | None = None
    """The stored blob, when ``complete``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HopDone:
    """A finished hop: its sealed output is uploaded, its metrics are final."""

    run_id: str
    hop_index: int
    output: BlobRef
    """The uploaded sealed model."""
    output_manifest: bytes
    """The signed manifest that seals ``output`` to the next party."""
    metrics_before: Mapping[str, float] = field(default_factory=dict)
    """Validation metrics of the incoming model at the site."""
    metrics_after: Mapping[str, float] = field(default_factory=dict)
    """Validation metrics of the trained model at the site."""
    num_examples: int = 0
    train_seconds: float = 0.0


class AssignmentStream(Protocol):
    """The assignments given to this site, as they come; ``cancel`` ends the iteration."""

    def __iter__(self) -> Iterator[Assignment]: ...

    def cancel(self) -> None:
        """Ends the stream; safe from another thread, and more than once."""


class CoordinatorClient(Protocol):
    """Every call a site makes to the coordinator (see the module docstring for errors).

    Constraints: a call that raised may or may not have reached the coordinator; every
    call is safe to repeat (the coordinator treats them as idempotent per run and hop).
    """

    def register(self, announcement: Announcement) -> Registration:
        """Announces this site (after every connect)."""
        ...

    def heartbeat(self) -> None:
        """Renews this site's lease."""
        ...

    def watch_assignments(self) -> AssignmentStream:
        """Streams the hops (and evaluations) given to this site, re-delivering unfinished ones."""
        ...

    def download(
        self,
        *,
        run_id: str,
        hop_index: int,
        blob: BlobRef,
        dest: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Writes hop ``hop_index``'s input ``blob`` to ``dest``, resuming a partial ``dest``,
        and checks its size and hash. ``progress`` learns the length written so far (at least
        once, at the end); an exception it raises stops the download."""
        ...

    def upload(
        self, *, run_id: str, hop_index: int, source: Path, manifest: bytes | None = None
    ) -> BlobRef:
        """Uploads ``source`` as hop ``hop_index``'s output, resuming where the coordinator's
        durable copy ends after an interruption; returns the stored blob. ``manifest``, the
        SignedManifest sealing ``source``, names its hash, so the file is read only once;
        it travels in the upload's header, so the coordinator checks it before storing a
        byte and the recipient may start downloading while the blob arrives."""
        ...

    def upload_status(self, transfer_id: str) -> UploadStatus:
        """How much of the upload ``transfer_id`` is stored."""
        ...

    def report_metrics(
        self, *, run_id: str, hop_index: int, stage: str, metrics: Mapping[str, float]
    ) -> None:
        """Records metrics of a hop in progress (``stage``: progress, before, evaluation)."""
        ...

    def complete_hop(self, done: HopDone) -> None:
        """Marks this site's hop done."""
        ...

    def fail_hop(self, *, run_id: str, hop_index: int, reason: str, message: str) -> None:
        """Marks this site's hop failed with a sanitized ``reason`` and ``message``."""
        ...


class GrpcCoordinatorClient:
    """:class:`CoordinatorClient` over a SiteService stub on an mTLS channel.

    Every unary call has a deadline of :data:`RPC_TIMEOUT_SECONDS`; every transfer attempt
    one sized by its remaining bytes. The assignment stream is long-lived and has no
    deadline: it is bounded by the channel's keepalive instead
    (:data:`baton.wire.channel.GRPC_OPTIONS`: a ping after 30 s of silence, the connection
    declared dead 10 s after an unanswered ping), so a vanished coordinator ends it within
    about 40 s.

    Args:
        stub: Site service stub on the site's channel.
        target: The coordinator's address, for error messages.
    """

    def __init__(self, stub: site_pb2_grpc.SiteServiceStub, *, target: str = "coordinator") -> None:
        self._stub = stub
        self._target = target

    def register(self, announcement: Announcement) -> Registration:
        """See :meth:`CoordinatorClient.register`."""
        request = site_pb2.RegisterRequest(
            capabilities=capabilities_to_proto(announcement.capabilities),
            profile=profile_to_proto(announcement.profile),
            software_version=announcement.software_version,
            signing_certificate_pem=announcement.signing_certificate_pem,
            encryption_certificate_pem=announcement.encryption_certificate_pem,
        )
        with self._rpc("register"):
            resp = self._stub.Register(request, timeout=RPC_TIMEOUT_SECONDS)
        return Registration(
            site_id=resp.site_id, federation=resp.federation, lease_seconds=resp.lease_seconds
        )

    def heartbeat(self) -> None:
        """See :meth:`CoordinatorClient.heartbeat`."""
        with self._rpc("heartbeat"):
            self._stub.Heartbeat(site_pb2.HeartbeatRequest(), timeout=RPC_TIMEOUT_SECONDS)

    def watch_assignments(self) -> AssignmentStream:
        """See :meth:`CoordinatorClient.watch_assignments`."""
        with self._rpc("watch assignments"):
            call = self._stub.WatchAssignments(site_pb2.WatchAssignmentsRequest())
        return _GrpcAssignments(call, self._target)

    def download(
        self,
        *,
        run_id: str,
        hop_index: int,
        blob: BlobRef,
        dest: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """See :meth:`CoordinatorClient.download`."""
        with self._rpc(f"download the input of hop {hop_index}"):
            transfer.download(
                self._stub,
                run_id=run_id,
                hop_index=hop_index,
                blob=blob,
                dest=dest,
                progress=progress,
            )

    def upload(
        self, *, run_id: str, hop_index: int, source: Path, manifest: bytes | None = None
    ) -> BlobRef:
        """See :meth:`CoordinatorClient.upload`."""
        sha256 = None if manifest is None else transfer.sealed_sha256(manifest)
        with self._rpc(f"upload the output of hop {hop_index}"):
            return transfer.upload(
                self._stub,
                run_id=run_id,
                hop_index=hop_index,
                source=source,
                sha256=sha256,
                manifest=b"" if manifest is None or sha256 is None else manifest,
            )

    def upload_status(self, transfer_id: str) -> UploadStatus:
        """See :meth:`CoordinatorClient.upload_status`."""
        with self._rpc("ask for an upload's status"):
            resp = self._stub.GetUploadStatus(
                site_pb2.GetUploadStatusRequest(transfer_id=transfer_id),
                timeout=RPC_TIMEOUT_SECONDS,
            )
        return UploadStatus(
            committed_offset=resp.committed_offset,
            complete=resp.complete,
            blob=blob_ref_from_proto(resp.blob),
        )

    def report_metrics(
        self, *, run_id: str, hop_index: int, stage: str, metrics: Mapping[str, float]
    ) -> None:
        """See :meth:`CoordinatorClient.report_metrics`."""
        request = site_pb2.ReportMetricsRequest(
            run_id=run_id, hop_index=hop_index, stage=stage, metrics=dict(metrics)
        )
        with self._rpc(f"report {stage} metrics of hop {hop_index}"):
            self._stub.ReportMetrics(request, timeout=RPC_TIMEOUT_SECONDS)

    def complete_hop(self, done: HopDone) -> None:
        """See :meth:`CoordinatorClient.complete_hop`."""
        request = site_pb2.CompleteHopRequest(
            run_id=done.run_id,
            hop_index=done.hop_index,
            output=blob_ref_to_proto(done.output),
            metrics_before=dict(done.metrics_before),
            metrics_after=dict(done.metrics_after),
            num_examples=done.num_examples,
            train_seconds=done.train_seconds,
            output_manifest=done.output_manifest,
        )
        with self._rpc(f"complete hop {done.hop_index}"):
            self._stub.CompleteHop(request, timeout=RPC_TIMEOUT_SECONDS)

    def fail_hop(self, *, run_id: str, hop_index: int, reason: str, message: str) -> None:
        """See :meth:`CoordinatorClient.fail_hop`."""
        request = site_pb2.FailHopRequest(
            run_id=run_id, hop_index=hop_index, reason=reason, message=message
        )
        with self._rpc(f"report the failure of hop {hop_index}"):
            self._stub.FailHop(request, timeout=RPC_TIMEOUT_SECONDS)

    def _rpc(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _translated(what, self._target)


@contextlib.contextmanager
def _translated(what: str, target: str) -> Iterator[None]:
    """Turns a failed gRPC call into the port's errors (see the module docstring)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise _error(exc, what, target) from None


def _error(exc: grpc.RpcError, what: str, target: str) -> Denied | Rejected | TransportError:
    # A bare grpc.RpcError carries no status; the channel's errors are also grpc.Call.
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or "no details"
    kind = failure_class(code)
    if kind == "site":
        return Denied(f"cannot {what}: the coordinator refused this site ({code.name})")
    if kind == "hop":
        return Rejected(f"cannot {what}: {code.name}: {details}", status=code.name)
    if is_server_fault(code):
        return ServerFault(f"cannot {what}: {code.name}: {details}", status=code.name)
    if code is grpc.StatusCode.UNAVAILABLE:
        why = unreachable(details)
        return TransportError(
            f"cannot {what}: coordinator at {target} unreachable" + (f" ({why})" if why else "")
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransportError(f"cannot {what}: coordinator at {target} did not answer in time")
    return TransportError(f"cannot {what}: {code.name}: {details}")


class _StreamCall(Protocol):
    """What a server-streaming gRPC call offers: its messages, and cancelling it."""

    def __iter__(self) -> Iterator[site_pb2.Assignment]: ...

    def cancel(self) -> bool: ...


class _GrpcAssignments:
    """A WatchAssignments call: domain assignments out, gRPC errors translated."""

    def __init__(self, call: _StreamCall, target: str) -> None:
        self._call = call
        self._target = target

    def __iter__(self) -> Iterator[Assignment]:
        with _translated("watch assignments", self._target):
            for msg in self._call:
                yield assignment_from_proto(msg)

    def cancel(self) -> None:
        self._call.cancel()
