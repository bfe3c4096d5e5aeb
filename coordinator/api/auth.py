"""Who is calling: the caller's identity from its TLS certificate, refused when revoked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from baton.errors import Denied, PkiError
from baton.security.pki import Identity, identity_from_certificate
from baton.security.tls import peer_certificate_pem, require_peer


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerGate:
    """Admits callers of one kind (``site`` or ``admin``) from one federation, over TLS 1.3.

    Identity is the SPIFFE id in the caller's verified TLS certificate, never a field of a
    message.
    """

    federation: str
    """Only certificates of this federation are served."""
    kind: str
    """The party kind the service is for."""
    revoked: Callable[[bytes], bool] = lambda cert_pem: False
    """Whether a certificate (PEM) is revoked; callers presenting one are refused."""

    def identify(self, context: grpc.ServicerContext) -> Identity:
        """The caller's identity.

        Raises:
            PkiError: The call is not over TLS 1.3, or the certificate is of another
                federation or kind, or revoked.
        """
        identity = require_peer(context, federation=self.federation, kind=self.kind)
        if self.revoked(peer_certificate_pem(context)):
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


def require_owner(admin: Identity, owner_certificate_pem: str, *, run_id: str) -> None:
    """Refuses ``admin`` unless it is the identity that signed the run's plan (its owner).
    A run stored without its owner's certificate may be stopped by any admin.

    Raises:
        Denied: Another admin asked.
    """
    if not owner_certificate_pem:
        return
    owner = identity_from_certificate(owner_certificate_pem.encode())
    if owner != admin:
        raise Denied(
            f"run {run_id} belongs to admin {owner.name}; admin {admin.name} may not cancel it",
            run_id=run_id,
        )
