"""Who is calling: the caller's identity from its TLS certificate, refused when revoked."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from baton.errors import Denied, PkiError
from baton.security.pki import Identity, identity_from_certificate, load_certificate
from baton.security.tls import peer_certificate_pem, require_tls13

CACHED_CERTIFICATES = 4096
"""Parsed peer certificates a gate keeps (a federation's sites and admins, with room)."""


class ParsedCertificates:
    """Peer certificates parsed once: the identity and serial number each names, keyed by
    the SHA-256 of the certificate as presented, the least recently used dropped past
    ``size``. Thread-safe. Only the parse is kept: whether the serial is revoked is asked
    on every call, of the CRL in force then.

    Args:
        size: Most certificates kept.
    """

    def __init__(self, size: int = CACHED_CERTIFICATES) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, tuple[Identity, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, cert_pem: bytes) -> tuple[Identity, int]:
        """The identity and serial number ``cert_pem`` names.

        Raises:
            PkiError: The certificate is malformed or names no single identity (never kept).
        """
        key = hashlib.sha256(cert_pem).digest()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        identity = identity_from_certificate(cert_pem)
        parsed = (identity, load_certificate(cert_pem, source="the certificate").serial_number)
        with self._lock:
            self._entries[key] = parsed
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return parsed


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerGate:
    """Admits callers of one kind (``site`` or ``admin``) from one federation, over TLS 1.3.

    Identity is the SPIFFE id in the caller's verified TLS certificate, never a field of a
    message. Each certificate is parsed once (see :class:`ParsedCertificates`); TLS 1.3,
    the federation, the kind and revocation are checked on every call.
    """

    federation: str
    """Only certificates of this federation are served."""
    kind: str
    """The party kind the service is for."""
    revoked: Callable[[int], bool] = lambda serial: False
    """Whether a certificate, by its serial number, is revoked; callers presenting one are
    refused."""
    parsed: ParsedCertificates = field(default_factory=ParsedCertificates)
    """The peer certificates parsed so far."""

    def identify(self, context: grpc.ServicerContext) -> Identity:
        """The caller's identity.

        Raises:
            PkiError: The call is not over TLS 1.3, or the certificate is of another
                federation or kind, or revoked.
        """
        require_tls13(context)
        identity, serial = self.parsed.parse(peer_certificate_pem(context))
        if identity.federation != self.federation or identity.kind != self.kind:
            raise PkiError(
                f"peer {identity.spiffe_id} is not a {self.kind} of federation {self.federation!r}"
            )
        if self.revoked(serial):
            raise PkiError(f"the TLS certificate of {self.kind} {identity.name} is revoked")
        return identity


class GatedHealth(health.HealthServicer):  # type: ignore[misc]  # grpc_health has no stubs
    """The standard gRPC health service, answering only callers one of ``gates`` admits:
    a revoked certificate learns nothing, not even that the coordinator is up.

    Args:
        gates: Each admits one kind of participant (sites, admins).
    """

    def __init__(self, *gates: PeerGate) -> None:
        super().__init__()
        self._gates = gates

    def _admit(self, context: grpc.ServicerContext) -> None:
        refusal: PkiError | None = None
        for gate in self._gates:
            try:
                gate.identify(context)
            except PkiError as exc:
                refusal = exc
            else:
                return
        raise refusal or PkiError("no participant may ask for the coordinator's health")

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        self._admit(context)
        response: health_pb2.HealthCheckResponse = super().Check(request, context)
        return response

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Any = None,
    ) -> Any:
        self._admit(context)
        return super().Watch(request, context, send_response_callback)


def require_owner(
    admin: Identity, owner_certificate_pem: str, *, run_id: str, action: str = "cancel it"
) -> None:
    """Refuses ``admin`` unless it is the identity that signed the run's plan (its owner).
    A run stored without its owner's certificate is open to any admin.

    Args:
        admin: The caller.
        owner_certificate_pem: The run owner's signing certificate, as stored.
        run_id: The run.
        action: What the caller asked to do, for the refusal ("admin X may not ...").

    Raises:
        Denied: Another admin asked.
    """
    if not owner_certificate_pem:
        return
    owner = identity_from_certificate(owner_certificate_pem.encode())
    if owner != admin:
        raise Denied(
            f"run {run_id} belongs to admin {owner.name}; admin {admin.name} may not {action}",
            run_id=run_id,
        )
