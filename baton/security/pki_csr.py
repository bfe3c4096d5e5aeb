"""TLS keys made at the party: a certificate signing request, and the CA issuing from it.

The CSR flow keeps a party's TLS private key where it was generated:

1. The party runs :func:`make_tls_request`: a fresh ECDSA P-256 key (``<name>.key``, mode
   0600) and a PKCS#10 request (``<name>.csr``) signed by it, naming the party by its
   SPIFFE id. Only the request leaves the party.
2. The CA operator, having checked out of band who sent it, runs
   :func:`issue_from_request`: the request's signature and names are checked, and the
   certificate (``<name>.pem``) is signed with exactly the extensions
   :func:`baton.security.pki.issue` gives, whatever else the request asks for.
3. The party puts ``<name>.pem`` beside its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from baton.errors import PkiError
from baton.security.files import make_dir, write_new
from baton.security.pki import _key_pem, certify_tls_key

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from baton.security.identity import Identity

__all__ = ["TlsRequest", "issue_from_request", "make_tls_request"]

REQUEST_SUFFIX = ".csr"
"""A TLS request's file is ``<name>.csr``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsRequest:
    """The files :func:`make_tls_request` wrote."""

    key: Path
    """The party's TLS private key (PEM, PKCS#8, mode 0600); it never leaves the party."""
    request: Path
    """The certificate signing request (PEM) for the CA operator."""


def make_tls_request(identity: Identity, out_dir: Path) -> TlsRequest:
    """At the party: generates its TLS key and a request for the CA naming ``identity``.

    Args:
        identity: Who the party is, as its certificate will name it.
        out_dir: Where to write ``<name>.key`` (0600) and ``<name>.csr``; created with
            mode 0700 if missing (the directory the party's TLS config points at).

    Returns:
        The paths written.

    Raises:
        PkiError: A file to write already exists, or writing fails.
    """
    key_path = out_dir / f"{identity.name}.key"
    request_path = out_dir / f"{identity.name}{REQUEST_SUFFIX}"
    for path in (key_path, request_path):
        if path.exists():
            raise PkiError(f"{path} already exists; remove it first to make a new request")
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    make_dir(out_dir)
    write_new(key_path, _key_pem(key), role="private key", mode=0o600)
    write_new(request_path, request.public_bytes(serialization.Encoding.PEM), role="TLS request")
    return TlsRequest(key=key_path, request=request_path)


def issue_from_request(
    ca_dir: Path,
    out_dir: Path,
    request: bytes,
    *,
    identity: Identity,
    days: int = 365,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> tuple[Path, Path]:
    """At the CA: issues the TLS certificate a party requested with :func:`make_tls_request`.

    Constraints: the request MUST be a PEM CSR for an ECDSA P-256 key whose signature
    verifies (the sender holds the key), and MUST name exactly ``identity``: its only SAN
    is ``identity``'s SPIFFE id and its common name, if any, is ``identity``'s name. Only
    the public key is copied from it; the certificate's names and extensions are the CA's.

    Args:
        ca_dir: Directory holding ``ca.pem`` and ``ca.key``.
        out_dir: Where to write ``<name>.pem`` and a copy of ``ca.pem`` (created 0700).
        request: The CSR's bytes.
        identity: The party the CA operator verified out of band.
        days: How long the certificate stays valid.
        dns_names: A coordinator's DNS names, given by the CA operator (never taken from
            the request); refused for any other kind.
        ip_addresses: A coordinator's IP addresses, likewise.

    Returns:
        The paths of the certificate and of the CA copy.

    Raises:
        PkiError: The request fails a check, or as :func:`baton.security.pki.issue`.
    """
    try:
        csr = x509.load_pem_x509_csr(request)
        public_key = csr.public_key()
        signed = csr.is_signature_valid
    except ValueError:
        raise PkiError("the TLS request is not a valid PEM certificate signing request") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
        ec.SECP256R1.name
    ):
        raise PkiError("the TLS request's key is not ECDSA P-256 (TLS in Baton needs it)")
    if not signed:
        raise PkiError("the TLS request's signature does not verify with its own key")
    names = _requested_names(csr)
    if names != [identity.spiffe_id]:
        raise PkiError(f"the TLS request names {names}, not exactly {identity.spiffe_id}")
    common = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common not in ([], [identity.name]):
        raise PkiError(f"the TLS request's common name is {common}, not {identity.name!r}")
    return certify_tls_key(
        ca_dir,
        out_dir,
        identity,
        public_key,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        days=days,
    )


def _requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """Every name the request's SAN extension asks for (URIs as they are, others typed)."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError:
        raise PkiError("the TLS request has a malformed extension") from None
    return [
        name.value if isinstance(name, x509.UniformResourceIdentifier) else f"{name!r}"
        for name in san
    ]
