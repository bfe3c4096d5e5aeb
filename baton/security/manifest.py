"""The signed hop manifest: its limits, what it binds, and its verification.

Wire format (``proto/baton/v1/envelope.proto``). A sealed hop is a ciphertext blob plus
a ``SignedManifest``. Strings below are length-prefixed (4-byte big-endian length, then
UTF-8), integers big-endian; ``ctx`` is ``u32 version || str run_id || u32 hop_index ||
str sender || str primary_recipient``.

- Chunk ``i`` of ``n`` (AES-256-GCM under the transfer's fresh content key, 16-byte tag
  appended): nonce ``u96 i``; AAD ``"baton/v1 chunk" 0x00 || ctx || u64 n || u64 i ||
  u8 (i == n - 1)``. The blob is the chunks concatenated; an empty plaintext is one empty
  chunk.
- Content key to recipient ``r`` (HPKE base mode, X25519 / HKDF-SHA256 / AES-256-GCM):
  ``info`` = ``"baton/v1 key-wrap" 0x00 || ctx || str r``.
- Signature: Ed25519 by the sender over ``"baton/v1 hop-manifest" 0x00 || manifest``,
  where ``manifest`` is the exact serialized ``HopManifest`` it carries: every field,
  wrapped keys, chunk hashes and the previous manifest's hash included.
- A manifest's hash (:attr:`HopManifest.digest`, the next hop's
  ``previous_manifest_hash``, and the replay guard's key) is the SHA-256 of the whole
  ``SignedManifest`` bytes. Those bytes are canonical (re-encoding them MUST give the
  same bytes), and the signature is verified strictly, so no relay can vary them.

Per-chunk hashes, not a Merkle root: a receiver (or the blind coordinator, while a blob
streams in) checks each chunk as it arrives without inclusion proofs; the list costs
32 bytes per chunk, about 32 KiB per GiB at 1 MiB chunks, inside :data:`MAX_MANIFEST_BYTES`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from baton.errors import SealError
from baton.security.keys import fingerprint
from baton.v1 import envelope_pb2

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


PROTOCOL_VERSION: Final = 1
TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
WRAPPED_KEY_BYTES: Final = 32 + KEY_BYTES + TAG_BYTES
"""HPKE output for a content key: encapsulated X25519 key, then key and tag."""
MIN_CHUNK_SIZE: Final = 4096
MAX_CHUNK_SIZE: Final = 16 << 20
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MAX_MANIFEST_BYTES: Final = 1 << 20
"""Default limit on a SignedManifest: about 30 000 chunks, 30 GiB at 1 MiB chunks."""
MAX_RECIPIENTS: Final = 16
MAX_ID_BYTES: Final = 256
SIGNATURE_DOMAIN: Final = b"baton/v1 hop-manifest\x00"
CHUNK_DOMAIN: Final = b"baton/v1 chunk\x00"
WRAP_DOMAIN: Final = b"baton/v1 key-wrap\x00"
HEX64: Final = re.compile(r"[0-9a-f]{64}")
"""A lower-case hex SHA-256 digest."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WrappedKey:
    """The content key wrapped to one recipient."""

    recipient: str
    """The recipient's SPIFFE id."""
    key_fingerprint: str
    """Hex SHA-256 of the recipient's raw X25519 public key."""
    wrapped: bytes = field(repr=False)
    """HPKE encapsulated key followed by the encrypted content key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HopManifest:
    """A verified hop manifest (the fields of ``baton.v1.HopManifest``, checked)."""

    version: int
    """Envelope protocol version."""
    run_id: str
    """The run."""
    hop_index: int
    """The hop within the run."""
    sender: str
    """SPIFFE id of the sender."""
    recipient: str
    """SPIFFE id of the primary recipient."""
    sender_key_fingerprint: str
    """Hex SHA-256 of the sender's raw Ed25519 public key."""
    wrapped_keys: tuple[WrappedKey, ...]
    """The content key for each recipient; the primary recipient's among them."""
    chunk_size: int
    """Plaintext bytes per chunk (all but the last are full)."""
    chunk_count: int
    """Number of chunks, at least 1."""
    plaintext_length: int
    """Plaintext bytes."""
    ciphertext_length: int
    """Blob bytes: plaintext plus one tag per chunk."""
    ciphertext_sha256: str
    """Hex SHA-256 of the blob: its content address."""
    chunk_hashes: tuple[bytes, ...] = field(repr=False)
    """Raw SHA-256 of each ciphertext chunk."""
    schema_hash: str
    """Hex SHA-256 of the model schema."""
    plan_hash: str
    """Hex SHA-256 of the signed run plan."""
    previous_manifest_hash: str
    """Hex SHA-256 of the previous hop's SignedManifest (hop 0: of the signed plan)."""
    created_ms: int
    """Sealing time, Unix milliseconds."""
    expires_ms: int
    """Expiry, Unix milliseconds."""
    digest: str
    """Hex SHA-256 of the SignedManifest bytes this was verified from."""


def context_binding(
    version: int, run_id: str, hop_index: int, sender: str, recipient: str
) -> bytes:
    """The ``ctx`` bytes that the chunk AAD and the HPKE info both start with."""
    return (
        struct.pack(">I", version)
        + _string(run_id)
        + struct.pack(">I", hop_index)
        + _string(sender)
        + _string(recipient)
    )


def chunk_aad(prefix: bytes, index: int, count: int) -> bytes:
    """The AAD of chunk ``index``; ``prefix`` is ``CHUNK_DOMAIN || ctx || u64 count``."""
    return prefix + struct.pack(">QB", index, index == count - 1)


def chunk_nonce(index: int) -> bytes:
    """The 96-bit big-endian counter nonce of chunk ``index``."""
    return index.to_bytes(12, "big")


def wrap_info(ctx: bytes, holder: str) -> bytes:
    """The HPKE ``info`` for the copy of the content key wrapped to ``holder``."""
    return WRAP_DOMAIN + ctx + _string(holder)


def chunk_count_for(plaintext_length: int, chunk_size: int) -> int:
    """Chunks for a plaintext: ceil(length / size), and at least one."""
    return max(1, -(-plaintext_length // chunk_size))


def verify_manifest(
    signed: bytes, *, sender_key: Ed25519PublicKey, max_bytes: int = MAX_MANIFEST_BYTES
) -> HopManifest:
    """Verifies a SignedManifest: what anyone holding the sender's public key can check.

    The coordinator calls this to refuse garbage early; it proves who sealed the hop and
    that the manifest is self-consistent, but not who may open it or whether the blob
    matches (the receiver's :func:`baton.security.envelope.open_file` checks those).

    Args:
        signed: The SignedManifest bytes as received.
        sender_key: The expected sender's Ed25519 key, from its certificate.
        max_bytes: Refuse larger input before parsing it.

    Returns:
        The verified manifest.

    Raises:
        SealError: ``oversized``, ``malformed``, ``bad_signature`` or
            ``unsupported_version``; never any other exception.
    """
    if len(signed) > max_bytes:
        raise SealError("oversized", f"signed manifest of {len(signed)} bytes > {max_bytes}")
    try:
        outer = envelope_pb2.SignedManifest.FromString(signed)
        canonical = envelope_pb2.SignedManifest(
            manifest=outer.manifest, signature=outer.signature
        ).SerializeToString()
    except (DecodeError, ValueError, TypeError, RuntimeError):
        raise SealError("malformed", "not a SignedManifest") from None
    if canonical != signed or not outer.manifest:
        raise SealError("malformed", "the SignedManifest is empty or not canonically encoded")
    try:
        sender_key.verify(outer.signature, SIGNATURE_DOMAIN + outer.manifest)
    except (InvalidSignature, ValueError, TypeError):
        raise SealError("bad_signature", "not signed by the expected sender's key") from None
    try:
        pb = envelope_pb2.HopManifest.FromString(outer.manifest)
    except (DecodeError, ValueError, TypeError, RuntimeError):
        raise SealError("malformed", "the signed bytes are not a HopManifest") from None
    manifest = _from_proto(pb, hashlib.sha256(signed).hexdigest())
    if manifest.sender_key_fingerprint != fingerprint(sender_key):
        raise SealError("malformed", "the manifest names another signing key than signed it")
    return manifest


def _from_proto(pb: envelope_pb2.HopManifest, digest: str) -> HopManifest:
    """Checks a parsed HopManifest for consistency and limits; returns the domain type."""
    if pb.version != PROTOCOL_VERSION:
        raise SealError("unsupported_version", f"envelope version {pb.version}")
    if pb.chunk_size > MAX_CHUNK_SIZE:
        raise SealError("oversized", f"chunk size {pb.chunk_size} > {MAX_CHUNK_SIZE}")
    problem = _problem(pb)
    if problem is not None:
        raise SealError("malformed", problem, run_id=pb.run_id[:MAX_ID_BYTES], hop=pb.hop_index)
    return HopManifest(
        version=pb.version,
        run_id=pb.run_id,
        hop_index=pb.hop_index,
        sender=pb.sender,
        recipient=pb.recipient,
        sender_key_fingerprint=pb.sender_key_fingerprint,
        wrapped_keys=tuple(
            WrappedKey(
                recipient=k.recipient,
                key_fingerprint=k.recipient_key_fingerprint,
                wrapped=k.wrapped_key,
            )
            for k in pb.wrapped_keys
        ),
        chunk_size=pb.chunk_size,
        chunk_count=pb.chunk_count,
        plaintext_length=pb.plaintext_length,
        ciphertext_length=pb.ciphertext_length,
        ciphertext_sha256=pb.ciphertext_sha256,
        chunk_hashes=tuple(pb.chunk_sha256),
        schema_hash=pb.schema_hash,
        plan_hash=pb.plan_hash,
        previous_manifest_hash=pb.previous_manifest_hash,
        created_ms=pb.created_ms,
        expires_ms=pb.expires_ms,
        digest=digest,
    )


def _problem(pb: envelope_pb2.HopManifest) -> str | None:
    """Says what makes a manifest inconsistent, or None."""
    for name in ("run_id", "sender", "recipient"):
        if not 0 < len(getattr(pb, name).encode()) <= MAX_ID_BYTES:
            return f"{name} is empty or longer than {MAX_ID_BYTES} bytes"
    for name in ("sender_key_fingerprint", "ciphertext_sha256", "schema_hash", "plan_hash"):
        if not HEX64.fullmatch(getattr(pb, name)):
            return f"{name} is not 64 lower-case hex digits"
    if not HEX64.fullmatch(pb.previous_manifest_hash):
        return "previous_manifest_hash is not 64 lower-case hex digits"
    if pb.chunk_size < MIN_CHUNK_SIZE:
        return f"chunk size {pb.chunk_size} < {MIN_CHUNK_SIZE}"
    if pb.chunk_count != chunk_count_for(pb.plaintext_length, pb.chunk_size):
        return "chunk count does not fit plaintext length and chunk size"
    if pb.ciphertext_length != pb.plaintext_length + TAG_BYTES * pb.chunk_count:
        return "ciphertext length does not fit plaintext length and chunk count"
    if len(pb.chunk_sha256) != pb.chunk_count or any(len(h) != 32 for h in pb.chunk_sha256):
        return "chunk hashes do not match the chunk count"
    holders = [k.recipient for k in pb.wrapped_keys]
    if not 0 < len(holders) <= MAX_RECIPIENTS or len(set(holders)) != len(holders):
        return f"1 to {MAX_RECIPIENTS} distinct recipients are required"
    if pb.recipient not in holders:
        return "no key is wrapped to the primary recipient"
    for k in pb.wrapped_keys:
        if not 0 < len(k.recipient.encode()) <= MAX_ID_BYTES:
            return "a wrapped key names no valid recipient"
        if not HEX64.fullmatch(k.recipient_key_fingerprint):
            return "a recipient key fingerprint is not 64 lower-case hex digits"
        if len(k.wrapped_key) != WRAPPED_KEY_BYTES:
            return f"a wrapped key is not {WRAPPED_KEY_BYTES} bytes"
    if pb.expires_ms <= pb.created_ms:
        return "the manifest expires before it was created"
    return None


def _string(value: str) -> bytes:
    """A length-prefixed UTF-8 string (4-byte big-endian length)."""
    data = value.encode()
    return struct.pack(">I", len(data)) + data
