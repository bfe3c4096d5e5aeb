"""What a hop is sealed for and what its receiver expects: the terms
:func:`baton.security.envelope.seal_file` and :func:`~baton.security.envelope.open_file`
take (re-exported there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from baton.security.manifest import HEX64, MAX_ID_BYTES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import x25519


def check_hex(name: str, value: str) -> None:
    """Raises ValueError unless ``value`` is a lower-case hex SHA-256 digest."""
    if not HEX64.fullmatch(value):
        raise ValueError(f"{name} must be 64 lower-case hex digits")


def check_id(name: str, value: str) -> None:
    """Raises ValueError unless ``value`` is 1 to 256 bytes (UTF-8)."""
    if not 0 < len(value.encode()) <= MAX_ID_BYTES:
        raise ValueError(f"{name} must be 1 to {MAX_ID_BYTES} bytes")


@dataclass(frozen=True, kw_only=True, slots=True)
class HopContext:
    """What the sender seals a hop for.

    Constraints: ids MUST be 1 to 256 bytes; hashes MUST be 64 lower-case hex digits.
    """

    run_id: str
    """The run."""
    hop_index: int
    """The hop within the run (0 to 2**32 - 1)."""
    sender: str
    """The sender's SPIFFE id."""
    recipient: str
    """The primary recipient's SPIFFE id (the party that trains next)."""
    previous_manifest_hash: str
    """Digest of the previous hop's SignedManifest; for hop 0, of the signed run plan."""
    plan_hash: str
    """Hex SHA-256 of the signed run plan."""
    schema_hash: str
    """Hex SHA-256 of the model schema (tensor names, dtypes, shapes)."""

    def __post_init__(self) -> None:
        for name in ("run_id", "sender", "recipient"):
            check_id(name, getattr(self, name))
        for name in ("previous_manifest_hash", "plan_hash", "schema_hash"):
            check_hex(name, getattr(self, name))
        if not 0 <= self.hop_index < 1 << 32:
            raise ValueError(f"hop_index {self.hop_index} is out of range")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecipientKey:
    """A party a hop is sealed to, with its certified X25519 key."""

    spiffe_id: str
    """The party's SPIFFE id."""
    public_key: x25519.X25519PublicKey
    """Its encryption key, checked with :func:`baton.security.keys.verify_party_keys`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Expectation:
    """What a receiver expects of the hop it opens; anything else is rejected."""

    run_id: str
    """The run the receiver works on."""
    hop_index: int
    """The hop it was assigned."""
    sender: str
    """SPIFFE id of the party that must have sealed it."""
    previous_manifest_hash: str
    """Digest of the hop before it (or of the signed plan, for hop 0)."""
    plan_hash: str
    """Hex SHA-256 of the signed run plan."""
    schema_hash: str | None = None
    """Hex SHA-256 of the model schema, or None not to check it here."""
    max_plaintext_bytes: int
    """Largest plaintext accepted."""
