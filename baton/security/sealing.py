"""Sealed hops in a run: a party's application keys, the signed run plan, and the checks
that tie a hop's envelope to the run (who sent it, to whom, after which hop).

The cryptographic envelope itself is :mod:`baton.security.envelope`; this module decides what goes
into it. A hop's chain starts at the plan: hop 0's manifest names :func:`plan_hash` as its
predecessor, and every later manifest names the digest of the one before.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from baton.errors import PkiError
from baton.security.identity import Identity
from baton.security.keys import (
    PartyKeys,
    certify,
    generate_keys,
    load_encryption_key,
    load_signing_key,
    make_key_request,
    verify_party_keys,
)
from baton.security.pki import identity_from_certificate, read_file

SIGNING_CERT_FILE: Final = "signing.pem"
"""File name of a party's signing certificate, beside its keys."""
ENCRYPTION_CERT_FILE: Final = "encryption.pem"
"""File name of a party's encryption certificate, beside its keys."""
KEY_REQUEST_FILE: Final = "key-request.pem"
"""File name of the request a party sends to the CA to certify its keys."""
PLAN_DOMAIN: Final = b"baton/v1 run-plan\x00"
"""Prefix of everything a plan signature covers, so it can never pass for another signature."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AppKeys:
    """A party's application keys (private, local) and their certificates (public)."""

    signing_key: ed25519.Ed25519PrivateKey
    encryption_key: x25519.X25519PrivateKey
    signing_cert_pem: bytes
    encryption_cert_pem: bytes

    @classmethod
    def load(cls, key_dir: Path) -> AppKeys:
        """Loads ``signing.key``, ``encryption.key`` and their certificates from ``key_dir``."""
        return cls(
            signing_key=load_signing_key(key_dir / "signing.key"),
            encryption_key=load_encryption_key(key_dir / "encryption.key"),
            signing_cert_pem=read_file(key_dir / SIGNING_CERT_FILE, role="signing certificate"),
            encryption_cert_pem=read_file(
                key_dir / ENCRYPTION_CERT_FILE, role="encryption certificate"
            ),
        )


def provision_app_keys(ca_dir: Path, key_dir: Path, identity: Identity) -> None:
    """Generates a party's keys in ``key_dir`` and has the CA certify them, in one step.

    For a local federation (demo, tests), where the CA is at hand. Across organisations
    the same happens in two steps: ``baton pki keygen`` at the party, ``baton pki
    certify`` at the CA, and only the request and the certificates travel.
    """
    files = generate_keys(key_dir)
    request = make_key_request(
        identity,
        load_signing_key(files.signing),
        load_encryption_key(files.encryption).public_key(),
    )
    signing_pem, encryption_pem = certify(ca_dir, request, identity=identity)
    (key_dir / SIGNING_CERT_FILE).write_bytes(signing_pem)
    (key_dir / ENCRYPTION_CERT_FILE).write_bytes(encryption_pem)


def check_party(
    ca_pem: bytes, signing_pem: str | bytes, encryption_pem: str | bytes, expected: Identity
) -> PartyKeys:
    """Verifies a party's two certificates against the pinned CA (see verify_party_keys)."""
    return verify_party_keys(ca_pem, _bytes(signing_pem), _bytes(encryption_pem), expected)


def check_owner(ca_pem: bytes, signing_pem: str | bytes, encryption_pem: str | bytes) -> PartyKeys:
    """Verifies the study owner's certificates: an admin of the CA's federation."""
    try:
        claimed = identity_from_certificate(_bytes(signing_pem))
    except PkiError:
        raise PkiError("the study owner's signing certificate names no valid identity") from None
    if claimed.kind != "admin":
        raise PkiError(f"the run plan was signed by {claimed.spiffe_id}, not a study owner")
    return check_party(ca_pem, signing_pem, encryption_pem, claimed)


def sign_plan(plan_toml: str, key: ed25519.Ed25519PrivateKey) -> bytes:
    """The study owner's signature over a plan's exact text."""
    return key.sign(PLAN_DOMAIN + plan_toml.encode("utf-8"))


def verify_plan(plan_toml: str, signature: bytes, owner: PartyKeys) -> str:
    """Checks the owner's signature over the plan; returns :func:`plan_hash`.

    Raises:
        PkiError: The plan is unsigned, or the signature does not verify (tampered plan).
    """
    if not signature:
        raise PkiError("the run plan is not signed")
    try:
        owner.signing_key.verify(signature, PLAN_DOMAIN + plan_toml.encode("utf-8"))
    except InvalidSignature:
        raise PkiError(
            f"the run plan's signature does not verify with {owner.identity.spiffe_id}'s key"
        ) from None
    return plan_hash(plan_toml, signature)


def plan_hash(plan_toml: str, signature: bytes) -> str:
    """Hex SHA-256 of the signed plan: the root of every run's manifest chain."""
    text = plan_toml.encode("utf-8")
    return hashlib.sha256(PLAN_DOMAIN + struct.pack(">I", len(text)) + text + signature).hexdigest()


def manifest_digest(signed_manifest: bytes) -> str:
    """Digest of a SignedManifest as the next hop names it (``HopManifest.digest``)."""
    return hashlib.sha256(signed_manifest).hexdigest()


def expected_previous(plan_digest: str, previous_manifest: bytes) -> str:
    """The predecessor a hop's manifest must name: the hop before it, or the plan."""
    return manifest_digest(previous_manifest) if previous_manifest else plan_digest


def _bytes(pem: str | bytes) -> bytes:
    if isinstance(pem, bytes):
        return pem
    try:
        return pem.encode("ascii")
    except UnicodeEncodeError:
        raise PkiError("a certificate is not ASCII PEM") from None
