"""A party's application keys (Ed25519 signing, X25519 encryption) and their certification.

Besides its TLS key, every party (site or study owner) holds two application keys that it
generates itself and never hands over: an Ed25519 key that signs hop manifests, and an
X25519 key that sealed hops are encrypted to. The flow:

1. The party runs :func:`generate_keys` (private key files mode 0600) and
   :func:`make_key_request`, and sends the request (public keys only) to the CA operator.
2. The CA operator, having checked out of band who sent it, runs :func:`certify`, which
   issues two leaf certificates naming the party by the same SPIFFE id as its TLS
   certificate: one for the Ed25519 key (keyUsage digitalSignature) and one for the X25519
   key (keyUsage keyAgreement). Each carries only a Baton-specific extended key usage and
   no serverAuth/clientAuth, so neither is acceptable as a TLS certificate.
3. A sender checks its next recipient's certificates with :func:`verify_party_keys`
   against its own pinned CA before sealing to that recipient.

The request is one standard PKCS#10 CSR signed by the Ed25519 key (proof of possession of
that key). The X25519 public key rides in the same CSR as a private extension
(``X25519_REQUEST_OID``), so the party's Ed25519 signature covers it; X25519 cannot sign,
so the request does NOT prove possession of the X25519 private key. That gains a
dishonest party nothing: certifying someone else's X25519 key under its own name makes
hops sealed to it readable by that key's holder, as forwarding what it decrypts would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from baton.errors import PkiError
from baton.security.files import read_file, write_new
from baton.security.identity import CA_CERT_FILE, Identity
from baton.security.pki import (
    federation_of_ca,
    load_ca,
    load_certificate,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SIGNING_KEY_FILE: Final = "signing.key"
"""File name of a party's Ed25519 private key (PEM, PKCS#8, mode 0600)."""
ENCRYPTION_KEY_FILE: Final = "encryption.key"
"""File name of a party's X25519 private key (PEM, PKCS#8, mode 0600)."""

X25519_REQUEST_OID: Final = x509.ObjectIdentifier("2.25.212815911499896492306011073507374986063")
"""CSR extension carrying the DER SubjectPublicKeyInfo of the party's X25519 key."""
SIGNING_EKU_OID: Final = x509.ObjectIdentifier("2.25.236353757119973568928522859166783544469")
"""Extended key usage of a Baton manifest-signing certificate (Ed25519)."""
ENCRYPTION_EKU_OID: Final = x509.ObjectIdentifier("2.25.201454564374443185413218914375666398538")
"""Extended key usage of a Baton hop-encryption certificate (X25519)."""

_PublicKey = ed25519.Ed25519PublicKey | x25519.X25519PublicKey
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)


def _usage(*, signing: bool) -> x509.KeyUsage:
    """keyUsage of an application certificate: digitalSignature or keyAgreement alone."""
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signing,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_DER: Final = serialization.Encoding.DER
_SPKI: Final = serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyFiles:
    """Where a party's application private keys are."""

    signing: Path
    """The Ed25519 signing key (PEM, PKCS#8, mode 0600)."""
    encryption: Path
    """The X25519 encryption key (PEM, PKCS#8, mode 0600)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PartyKeys:
    """A party's certified public application keys, checked against the pinned CA."""

    identity: Identity
    """Who the certificates name."""
    signing_key: ed25519.Ed25519PublicKey
    """The key that verifies the party's manifest signatures."""
    encryption_key: x25519.X25519PublicKey
    """The key that hops are sealed to."""


def fingerprint(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> str:
    """Lower-case hex SHA-256 of the raw 32-byte public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keys(out_dir: Path) -> KeyFiles:
    """Generates a fresh Ed25519 and X25519 key pair into ``out_dir``.

    Args:
        out_dir: Where to write ``signing.key`` and ``encryption.key`` (mode 0600);
            created with mode 0700 if missing.

    Returns:
        The paths written.

    Raises:
        PkiError: If either file already exists or cannot be written.
    """
    files = KeyFiles(signing=out_dir / SIGNING_KEY_FILE, encryption=out_dir / ENCRYPTION_KEY_FILE)
    for path in (files.signing, files.encryption):
        if path.exists():
            raise PkiError(f"{path} already exists; refusing to overwrite a private key")
    try:
        out_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create directory {out_dir}: {exc.strerror}") from None
    key = "private key"
    write_new(files.signing, _pem(ed25519.Ed25519PrivateKey.generate()), role=key, mode=0o600)
    write_new(files.encryption, _pem(x25519.X25519PrivateKey.generate()), role=key, mode=0o600)
    return files


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Loads an Ed25519 private key written by :func:`generate_keys`.

    Raises:
        PkiError: If the file is unreadable, not an unencrypted PEM key, or not Ed25519.
    """
    key = _load_private(path, role="signing key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"signing key {path} is not an Ed25519 key")
    return key


def load_encryption_key(path: Path) -> x25519.X25519PrivateKey:
    """Loads an X25519 private key written by :func:`generate_keys`.

    Raises:
        PkiError: If the file is unreadable, not an unencrypted PEM key, or not X25519.
    """
    key = _load_private(path, role="encryption key")
    if not isinstance(key, x25519.X25519PrivateKey):
        raise PkiError(f"encryption key {path} is not an X25519 key")
    return key


def make_key_request(
    identity: Identity,
    signing_key: ed25519.Ed25519PrivateKey,
    encryption_key: x25519.X25519PublicKey,
) -> bytes:
    """Builds the request a party sends to the CA operator; it holds no private key.

    Args:
        identity: The party, as its TLS certificate names it.
        signing_key: The party's Ed25519 key; it signs the request.
        encryption_key: The public half of the party's X25519 key.

    Returns:
        A PEM PKCS#10 CSR naming ``identity`` by its SPIFFE URI SAN and carrying the X25519
        public key in the ``X25519_REQUEST_OID`` extension.
    """
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.spiffe_id)]),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                X25519_REQUEST_OID, encryption_key.public_bytes(_DER, _SPKI)
            ),
            critical=False,
        )
        .sign(signing_key, None)
        .public_bytes(serialization.Encoding.PEM)
    )


def certify(
    ca_dir: Path, request: bytes, *, identity: Identity, days: int = 365
) -> tuple[bytes, bytes]:
    """Issues a party's signing and encryption certificates from the CA in ``ca_dir``.

    Constraints: the request MUST be a CSR with a valid Ed25519 signature that names
    exactly ``identity`` and carries an X25519 key; ``identity`` MUST belong to the CA's
    federation. Nothing but the two public keys is copied from the request.

    Args:
        ca_dir: Directory holding ``ca.pem`` and ``ca.key``.
        request: The bytes :func:`make_key_request` produced.
        identity: The party the CA operator verified out of band.
        days: How long the certificates stay valid.

    Returns:
        ``(signing_cert_pem, encryption_cert_pem)``.

    Raises:
        PkiError: If the CA is unusable or the request fails a check.
    """
    if days < 1:
        raise PkiError(f"the validity period must be at least one day, not {days}")
    _, ca_cert, ca_key = load_ca(ca_dir)
    _check_validity(ca_cert, f"CA certificate {ca_dir / CA_CERT_FILE}", dt.datetime.now(dt.UTC))
    federation = federation_of_ca(ca_cert.public_bytes(serialization.Encoding.PEM))
    if identity.federation != federation:
        raise PkiError(
            f"cannot certify {identity.spiffe_id}: the CA in {ca_dir} is for federation "
            f"{federation!r}"
        )
    try:
        csr = x509.load_pem_x509_csr(request)
        signing_key = csr.public_key()
        valid = csr.is_signature_valid
        extensions = csr.extensions
    except ValueError:
        raise PkiError("the key request is not a valid PEM certificate signing request") from None
    if not isinstance(signing_key, ed25519.Ed25519PublicKey) or not valid:
        raise PkiError("the key request is not signed by an Ed25519 key")
    try:
        uris = extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        spki = extensions.get_extension_for_oid(X25519_REQUEST_OID).value
        der = spki.value if isinstance(spki, x509.UnrecognizedExtension) else b""
        encryption_key = serialization.load_der_public_key(der)
    except x509.ExtensionNotFound as exc:
        raise PkiError(f"the key request lacks the {exc.oid.dotted_string} extension") from None
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm):
        raise PkiError("the key request carries a malformed X25519 key") from None
    if uris != [identity.spiffe_id]:
        raise PkiError(f"the key request names {uris}, not exactly {identity.spiffe_id}")
    if not isinstance(encryption_key, x25519.X25519PublicKey):
        raise PkiError("the key request's encryption key is not an X25519 key")
    sign = _leaf(ca_cert, ca_key, identity, days)
    return (
        sign(signing_key, _usage(signing=True), SIGNING_EKU_OID),
        sign(encryption_key, _usage(signing=False), ENCRYPTION_EKU_OID),
    )


def verify_party_keys(
    ca_pem: bytes,
    signing_cert_pem: bytes,
    encryption_cert_pem: bytes,
    expected: Identity,
    *,
    now: dt.datetime | None = None,
) -> PartyKeys:
    """Checks a party's two application certificates against a pinned CA.

    Constraints: each certificate MUST be issued directly by the CA, be within its
    validity period (as MUST the CA), not be a CA, name exactly ``expected`` as its only
    SAN, certify a key of the right type, and carry exactly the right key usage and
    extended key usage; ``expected`` MUST belong to the CA's federation.

    Args:
        ca_pem: The federation CA the checking party pins.
        signing_cert_pem: The party's Ed25519 certificate.
        encryption_cert_pem: The party's X25519 certificate.
        expected: Who the party must be.
        now: The instant to check validity at; the current time by default.

    Returns:
        The party's checked public keys.

    Raises:
        PkiError: Naming the certificate and the check that failed.
    """
    now = now or dt.datetime.now(dt.UTC)
    ca = load_certificate(ca_pem, source="the CA certificate")
    federation = federation_of_ca(ca_pem)
    _check_validity(ca, "the CA certificate", now)
    if expected.federation != federation:
        raise PkiError(f"{expected.spiffe_id} is outside federation {federation!r} of the CA")
    signing_key = _check_leaf(ca, signing_cert_pem, expected, now, signing=True)
    encryption_key = _check_leaf(ca, encryption_cert_pem, expected, now, signing=False)
    if not isinstance(signing_key, ed25519.Ed25519PublicKey):
        raise PkiError(f"the signing certificate of {expected.spiffe_id} is not for Ed25519")
    if not isinstance(encryption_key, x25519.X25519PublicKey):
        raise PkiError(f"the encryption certificate of {expected.spiffe_id} is not for X25519")
    return PartyKeys(identity=expected, signing_key=signing_key, encryption_key=encryption_key)


def _check_leaf(
    ca: x509.Certificate, pem: bytes, expected: Identity, now: dt.datetime, *, signing: bool
) -> object:
    """Checks one application certificate; returns its public key (type not yet checked)."""
    role, eku = ("signing", SIGNING_EKU_OID) if signing else ("encryption", ENCRYPTION_EKU_OID)
    source = f"the {role} certificate of {expected.spiffe_id}"
    cert = load_certificate(pem, source=source)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        raise PkiError(f"{source} was not issued by the pinned CA") from None
    _check_validity(cert, source, now)
    try:
        exts = cert.extensions
        basic = exts.get_extension_for_class(x509.BasicConstraints).value
        sans = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = exts.get_extension_for_class(x509.KeyUsage).value
        extended = list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value)
        key: object = cert.public_key()
    except x509.ExtensionNotFound as exc:
        raise PkiError(f"{source} lacks the {exc.oid.dotted_string} extension") from None
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm):
        raise PkiError(f"{source} is malformed") from None
    if basic.ca:
        raise PkiError(f"{source} is a CA certificate")
    if list(sans) != [x509.UniformResourceIdentifier(expected.spiffe_id)]:
        raise PkiError(f"{source} does not name exactly {expected.spiffe_id}")
    if usage != _usage(signing=signing):
        raise PkiError(f"{source} has the wrong key usage")
    if extended != [eku]:
        raise PkiError(f"{source} is not a Baton {role} certificate (extended key usage)")
    return key


def _check_validity(cert: x509.Certificate, source: str, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise PkiError(f"{source} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}")
    if now > cert.not_valid_after_utc:
        raise PkiError(f"{source} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def _leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, identity: Identity, days: int
) -> Callable[[_PublicKey, x509.KeyUsage, x509.ObjectIdentifier], bytes]:
    """Returns a function that signs one application certificate for ``identity``."""
    now = dt.datetime.now(dt.UTC)

    def sign(key: _PublicKey, usage: x509.KeyUsage, eku: x509.ObjectIdentifier) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.spiffe_id)]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    return sign


def _pem(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (protected by its file mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private(path: Path, *, role: str) -> object:
    """Parses an unencrypted PEM private key file; ``role`` names it in errors."""
    pem = read_file(path, role=role)
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm):
        raise PkiError(f"{role} {path} is not an unencrypted PEM private key") from None
