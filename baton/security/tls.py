"""gRPC mutual-TLS credentials from federation certificates, and the peer's identity.

Both ends authenticate: the server requires a client certificate from the federation CA,
and the client verifies the server's certificate against the same CA and the dialled host.
grpc checks the host against the server certificate's SANs, IP SANs included: a client
dialling ``127.0.0.1:<port>`` needs an IP SAN ``127.0.0.1`` (``issue(...,
ip_addresses=["127.0.0.1"])``), one dialling ``localhost:<port>`` a DNS SAN ``localhost``.
No ``grpc.ssl_target_name_override`` is needed. Message-size options belong to the
transport modules, not here.

TLS 1.3 only: processes pin it before gRPC loads (:mod:`baton.security.tls13`), and
:func:`require_peer` refuses any call that negotiated another version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from baton.errors import PkiError
from baton.security.pki import (
    Identity,
    federation_of_ca,
    identity_from_certificate,
    load_certificate,
    load_private_key,
    read_file,
    same_public_key,
)
from baton.security.pki_leaf import purposes
from baton.security.tls13 import TLS_VERSION


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsMaterial:
    """Checked TLS material, in memory, ready to build gRPC credentials."""

    ca_pem: bytes
    """The federation CA certificate (PEM)."""
    cert_pem: bytes
    """This party's certificate (PEM), issued directly by the CA."""
    key_pem: bytes = field(repr=False)
    """This party's private key (PEM); never printed."""
    identity: Identity
    """The identity the certificate names."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsFiles:
    """Where a party's TLS files are."""

    ca: Path
    """The federation CA certificate (PEM)."""
    cert: Path
    """This party's certificate (PEM)."""
    key: Path
    """This party's private key (PEM, mode 0600)."""

    def load(self) -> TlsMaterial:
        """Reads and checks the three files.

        Constraints: the key MUST match the certificate; the certificate MUST be issued
        directly by the CA, name exactly one identity of the CA's federation, and be within
        its validity period, as MUST the CA certificate.

        Returns:
            The checked material.

        Raises:
            PkiError: Naming the file and its role, if a file is missing, unreadable,
                malformed, or fails a check.
        """
        ca_pem = read_file(self.ca, role="CA certificate")
        cert_pem = read_file(self.cert, role="certificate")
        key_pem = read_file(self.key, role="private key")
        ca_cert = load_certificate(ca_pem, source=f"CA certificate {self.ca}")
        cert = load_certificate(cert_pem, source=f"certificate {self.cert}")
        key = load_private_key(key_pem, source=f"private key {self.key}")
        if not same_public_key(key, cert):
            raise PkiError(f"private key {self.key} does not match certificate {self.cert}")
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
            raise PkiError(
                f"certificate {self.cert} was not issued by the CA in {self.ca}"
            ) from None
        now = dt.datetime.now(dt.UTC)
        _check_validity(ca_cert, f"CA certificate {self.ca}", now)
        _check_validity(cert, f"certificate {self.cert}", now)
        try:
            federation = federation_of_ca(ca_pem)
        except PkiError as exc:
            raise PkiError(f"CA certificate {self.ca} is not acceptable: {exc.message}") from None
        try:
            identity = identity_from_certificate(cert_pem)
        except PkiError as exc:
            raise PkiError(f"certificate {self.cert} is not acceptable: {exc.message}") from None
        if identity.federation != federation:
            raise PkiError(
                f"certificate {self.cert} names {identity.spiffe_id}, outside federation "
                f"{federation!r} of the CA in {self.ca}"
            )
        return TlsMaterial(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, identity=identity)


_PURPOSE_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}
"""How OpenSSL names the extended key usages a federation certificate carries."""


def require_kind(material: TlsMaterial, kind: str, *, source: str) -> None:
    """Refuses a party's own certificate unless it names a ``kind`` and, when it states
    its purposes (extended key usage), has that kind's (:func:`~baton.security.pki_leaf.
    purposes`). A coordinator serving with a site's certificate would be refused by every
    client, which pins the coordinator's kind (:mod:`baton.security.pin`): better to
    refuse to start. :meth:`TlsFiles.load` already checked the federation and validity.

    Args:
        material: The loaded material.
        kind: The kind of party this process is.
        source: The certificate file, for the error.

    Raises:
        PkiError: Naming ``source`` and what its certificate names.
    """
    identity = material.identity
    if identity.kind != kind:
        raise PkiError(
            f"certificate {source} names {identity.spiffe_id}, a {identity.kind}'s "
            f"certificate; a {kind} needs a {kind}'s certificate, the only kind its clients "
            f"accept (baton pki issue --kind {kind})"
        )
    cert = load_certificate(material.cert_pem, source=f"certificate {source}")
    try:
        stated = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return
    needed = purposes(kind)
    missing = [_PURPOSE_NAMES.get(oid, oid.dotted_string) for oid in needed if oid not in stated]
    if missing:
        raise PkiError(
            f"certificate {source} names {identity.spiffe_id} but its extended key usage "
            f"lacks {', '.join(missing)}, which a {kind}'s certificate needs; issue it again "
            f"(baton pki issue --kind {kind})"
        )


def server_credentials(m: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the federation CA."""
    return grpc.ssl_server_credentials(
        [(m.key_pem, m.cert_pem)], root_certificates=m.ca_pem, require_client_auth=True
    )


def channel_credentials(m: TlsMaterial) -> grpc.ChannelCredentials:
    """Channel credentials that present this party's certificate and trust only the CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=m.ca_pem, private_key=m.key_pem, certificate_chain=m.cert_pem
    )


def peer_identity(context: grpc.ServicerContext) -> Identity:
    """Returns the identity named by the certificate the peer presented.

    The handshake already verified the certificate against the federation CA (see
    :func:`server_credentials`); this reads who it names.

    Raises:
        PkiError: If the peer presented no certificate or it names no valid identity.
    """
    return identity_from_certificate(peer_certificate_pem(context))


def peer_certificate_pem(context: grpc.ServicerContext) -> bytes:
    """Returns the PEM certificate the peer presented in the handshake.

    Raises:
        PkiError: If the peer presented no certificate.
    """
    value = _auth_property(context, "x509_pem_cert")
    if value is None:
        raise PkiError("the peer presented no certificate")
    return value


def require_peer(context: grpc.ServicerContext, *, federation: str, kind: str) -> Identity:
    """Returns the peer's identity if it is a ``kind`` of ``federation``.

    Raises:
        PkiError: If the call is not over TLS 1.3, or the peer has no valid identity, or
            another federation or kind.
    """
    require_tls13(context)
    identity = peer_identity(context)
    if identity.federation != federation or identity.kind != kind:
        raise PkiError(f"peer {identity.spiffe_id} is not a {kind} of federation {federation!r}")
    return identity


def require_tls13(context: grpc.ServicerContext) -> None:
    """Refuses a call that negotiated anything but TLS 1.3.

    Raises:
        PkiError: Naming the version the peer negotiated.
    """
    version = _auth_property(context, "ssl_tls_version")
    if version != TLS_VERSION.encode():
        shown = version.decode("ascii", "replace") if version else "no TLS"
        raise PkiError(f"the peer connected with {shown}; only {TLS_VERSION} is served")


def _auth_property(context: grpc.ServicerContext, name: str) -> bytes | None:
    # At run time grpc maps each property to a list of bytes (its type stubs say bytes).
    value: object = context.auth_context().get(name)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, bytes) and value else None


def _check_validity(cert: x509.Certificate, source: str, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise PkiError(
            f"{source} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise PkiError(f"{source} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
