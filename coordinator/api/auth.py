"""Who is calling: the caller's identity from its TLS certificate, refused when revoked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from baton.errors import PkiError
from baton.security.pki import Identity
from baton.security.tls import peer_certificate_pem, require_peer


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerGate:
    """Admits callers of one kind (``site`` or ``admin``) from one federation.

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
            PkiError: The certificate is of another federation or kind, or revoked.
        """
        identity = require_peer(context, federation=self.federation, kind=self.kind)
        if self.revoked(peer_certificate_pem(context)):
            raise PkiError(f"the TLS certificate of {self.kind} {identity.name} is revoked")
        return identity
