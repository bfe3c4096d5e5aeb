"""The federation PKI: the federation CA and the certificates it issues to named parties.

A federation has one root CA (ECDSA P-256, kept offline by the consortium). Every party
gets a leaf certificate naming it by exactly one SAN URI, its SPIFFE id
``spiffe://<federation>/<kind>/<name>``. The CA certificate carries the trust domain itself
(``spiffe://<federation>``) as its only URI SAN, and a critical name constraint that lets it
sign URI SANs under that trust domain only, which grpc's TLS (BoringSSL) and OpenSSL both
enforce at verification time. cryptography's ``x509.verification.PolicyBuilder`` verifiers
reject that constraint ("unsupported name constraint", cryptography 50): check leaves in
Python with ``verify_directly_issued_by`` plus explicit checks, as :mod:`baton.security.tls` does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from baton.errors import PkiError
from baton.security.files import make_dir, read_file, write_new
from baton.security.identity import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    LABEL,
    LABEL_PATTERN,
    SCHEME,
    Identity,
    shown,
)
from baton.security.pki_leaf import CLOCK_SKEW, key_usage, leaf_names, sign_leaf

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "Identity",
    "IssuedFiles",
    "certify_tls_key",
    "create_ca",
    "federation_of_ca",
    "identity_from_certificate",
    "issue",
    "load_ca",
    "load_certificate",
    "load_private_key",
    "read_file",
    "same_public_key",
    "write_new",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedFiles:
    """The files :func:`issue` wrote."""

    cert: Path
    """The leaf certificate (PEM)."""
    key: Path
    """The leaf's private key (PEM, PKCS#8, mode 0600)."""
    ca: Path
    """A copy of the federation CA certificate (PEM)."""


def load_certificate(pem: bytes, *, source: str) -> x509.Certificate:
    """Parses one PEM certificate; ``source`` names it in the error.

    Raises:
        PkiError: If ``pem`` holds no valid PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PkiError(f"{source} is not a valid PEM certificate") from None


def load_private_key(pem: bytes, *, source: str) -> ec.EllipticCurvePrivateKey:
    """Parses an unencrypted PEM ECDSA private key; ``source`` names it in the error.

    Raises:
        PkiError: If ``pem`` is not an unencrypted PEM ECDSA private key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{source} is not an ECDSA key (TLS in Baton needs ECDSA P-256)")
    return key


def same_public_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies the public half of ``key``."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def identity_from_certificate(cert_pem: bytes) -> Identity:
    """Returns the identity a leaf certificate names by its SPIFFE URI SAN.

    Constraints: the certificate MUST carry exactly one URI SAN, and it MUST be a valid
    Baton SPIFFE id (as the SPIFFE X509-SVID specification requires of leaves).

    Raises:
        PkiError: If the certificate is malformed or does not name exactly one identity.
    """
    cert = load_certificate(cert_pem, source="the certificate")
    uris = _uri_sans(cert)
    if len(uris) != 1:
        raise PkiError(
            f"the certificate has {len(uris)} URI SANs; exactly one spiffe:// URI is required"
        )
    return Identity.parse(uris[0])


def federation_of_ca(ca_pem: bytes) -> str:
    """Returns the federation a CA certificate is the root of.

    The federation is read from the CA's only URI SAN, ``spiffe://<federation>``.

    Raises:
        PkiError: If the certificate is not a Baton federation CA.
    """
    return _federation_of(load_certificate(ca_pem, source="the CA certificate"))


def create_ca(out_dir: Path, federation: str, *, days: int = 3650) -> Path:
    """Creates a federation's root CA: ``ca.pem`` and ``ca.key`` (mode 0600) in ``out_dir``.

    Args:
        out_dir: Where to write; created with mode 0700 if missing.
        federation: The federation (trust domain) name.
        days: How long the CA certificate stays valid.

    Returns:
        The path of ``ca.pem``.

    Raises:
        PkiError: If the name or lifetime is invalid, a CA already exists in ``out_dir``,
            or the files cannot be written.
    """
    if not LABEL.fullmatch(federation):
        raise PkiError(f"invalid federation {shown(federation)}: must match {LABEL_PATTERN}")
    _check_days(days)
    cert_path, key_path = out_dir / CA_CERT_FILE, out_dir / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists():
            raise PkiError(f"{path} already exists; refusing to overwrite an existing CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(federation)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SCHEME + federation)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    make_dir(out_dir)
    write_new(key_path, _key_pem(key), role="CA private key", mode=0o600)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), role="CA certificate")
    return cert_path


def issue(
    ca_dir: Path,
    out_dir: Path,
    identity: Identity,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 365,
) -> IssuedFiles:
    """Issues a TLS certificate for ``identity`` from the CA in ``ca_dir``.

    A fresh ECDSA P-256 key is generated. The certificate names the identity by its SPIFFE
    id (URI SAN) and common name; a coordinator's also by the given DNS and IP SANs. A
    coordinator's certificate is for TLS server authentication only, every other kind's for
    client authentication only (see :mod:`baton.security.pki_leaf`).

    Args:
        ca_dir: Directory holding ``ca.pem`` and ``ca.key``.
        out_dir: Where to write ``<name>.pem``, ``<name>.key`` (0600) and a copy of
            ``ca.pem``; created with mode 0700 if missing.
        identity: Who the certificate is for; its federation MUST be the CA's.
        dns_names: Extra DNS SANs of a coordinator (dialled by name, e.g. ``"localhost"``).
        ip_addresses: Extra IP SANs of a coordinator (dialled by address, e.g. ``"127.0.0.1"``).
        days: How long the certificate stays valid.

    Returns:
        The paths written.

    Raises:
        PkiError: If the CA is missing or unusable, belongs to another federation, a SAN
            is invalid or asked for a party that is not the coordinator, a file to write
            already exists, or writing fails.
    """
    key_path = out_dir / f"{identity.name}.key"
    if key_path.exists():
        raise PkiError(f"{key_path} already exists; remove it first to re-issue")
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, ca_copy = certify_tls_key(
        ca_dir,
        out_dir,
        identity,
        key.public_key(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        days=days,
    )
    write_new(key_path, _key_pem(key), role="private key", mode=0o600)
    return IssuedFiles(cert=cert_path, key=key_path, ca=ca_copy)


def certify_tls_key(
    ca_dir: Path,
    out_dir: Path,
    identity: Identity,
    public_key: ec.EllipticCurvePublicKey,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 365,
) -> tuple[Path, Path]:
    """Certifies ``public_key`` as :func:`issue` does, but writes no key: ``<name>.pem`` and a
    copy of ``ca.pem`` into ``out_dir``; returns their paths. Raises as :func:`issue` does.
    """
    _check_days(days)
    sans = leaf_names(identity, dns_names, ip_addresses)
    ca_pem, ca_cert, ca_key = load_ca(ca_dir)
    federation = _federation_of(ca_cert)
    if identity.federation != federation:
        raise PkiError(
            f"cannot issue {identity.spiffe_id}: the CA in {ca_dir} is for federation "
            f"{federation!r}, not {identity.federation!r}"
        )
    cert_path = out_dir / f"{identity.name}.pem"
    ca_copy = out_dir / CA_CERT_FILE
    if cert_path.exists():
        raise PkiError(f"{cert_path} already exists; remove it first to re-issue")
    if ca_copy.exists() and read_file(ca_copy, role="CA certificate") != ca_pem:
        raise PkiError(f"{ca_copy} exists and is a different CA certificate")
    cert = sign_leaf(ca_cert, ca_key, public_key, identity, sans, days)
    make_dir(out_dir)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), role="certificate")
    if not ca_copy.exists():
        write_new(ca_copy, ca_pem, role="CA certificate")
    return cert_path, ca_copy


def load_ca(ca_dir: Path) -> tuple[bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Reads the CA in ``ca_dir``: its certificate PEM, certificate, and matching key."""
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    ca_pem = read_file(cert_path, role="CA certificate")
    ca_cert = load_certificate(ca_pem, source=f"CA certificate {cert_path}")
    key_pem = read_file(key_path, role="CA private key")
    ca_key = load_private_key(key_pem, source=f"CA private key {key_path}")
    if not same_public_key(ca_key, ca_cert):
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    return ca_pem, ca_cert, ca_key


def _uri_sans(cert: x509.Certificate) -> list[str]:
    """The certificate's URI SANs, or none if it has no SAN extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError:
        raise PkiError("the certificate has a malformed extension") from None
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _federation_of(ca_cert: x509.Certificate) -> str:
    """The federation of a parsed CA certificate (see :func:`federation_of_ca`)."""
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError:
        raise PkiError("the CA certificate has a malformed extension") from None
    if constraints is None or not constraints.ca:
        raise PkiError("the CA certificate is not a CA (basicConstraints CA is not set)")
    uris = _uri_sans(ca_cert)
    if len(uris) != 1 or not uris[0].startswith(SCHEME):
        raise PkiError("the CA certificate does not name its federation (one spiffe:// URI SAN)")
    federation = uris[0][len(SCHEME) :]
    if not LABEL.fullmatch(federation):
        raise PkiError(f"the CA certificate names an invalid federation {shown(federation)}")
    return federation


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (protected by its file mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"the validity period must be at least one day, not {days}")
