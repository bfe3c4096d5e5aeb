"""Sealed hops: encrypt a model file to its recipients and sign it; verify and open it.

:func:`seal_file` streams a plaintext file into a ciphertext blob in chunks and returns
the SignedManifest that goes with it; :func:`open_file` verifies everything and streams
the blob back into plaintext, which appears at its destination only once every check
passed. The wire format and what each part binds are documented in
:mod:`baton.security.manifest`; replay bookkeeping is in
:mod:`baton.security.replay`. Neither function holds the whole model in memory, and nothing
here logs keys or plaintext.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from baton.errors import SealError
from baton.io import AtomicFile
from baton.security.envelope_terms import Expectation, HopContext, RecipientKey, check_id
from baton.security.keys import fingerprint
from baton.security.manifest import (
    CHUNK_DOMAIN,
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    MAX_CHUNK_SIZE,
    MAX_MANIFEST_BYTES,
    MAX_RECIPIENTS,
    MIN_CHUNK_SIZE,
    PROTOCOL_VERSION,
    SIGNATURE_DOMAIN,
    TAG_BYTES,
    HopManifest,
    chunk_aad,
    chunk_count_for,
    chunk_nonce,
    context_binding,
    verify_manifest,
    wrap_info,
)
from baton.security.streaming import HashedBuffers, Tail, fill
from baton.v1 import envelope_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

    from baton.security.replay import ReplayGuard

__all__ = [
    "CLOCK_SKEW_MS",
    "DEFAULT_TTL_SECONDS",
    "Expectation",
    "HopContext",
    "RecipientKey",
    "open_file",
    "seal_file",
]

DEFAULT_TTL_SECONDS: Final = 24 * 3600
"""How long a sealed hop stays acceptable by default."""
CLOCK_SKEW_MS: Final = 5 * 60 * 1000
"""How far in the future a manifest's creation time may lie (clocks differ)."""
_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def seal_file(
    plaintext: Path,
    ciphertext: Path,
    *,
    ctx: HopContext,
    sender_key: ed25519.Ed25519PrivateKey,
    recipients: Sequence[RecipientKey],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now_ms: int | None = None,
) -> bytes:
    """Encrypts ``plaintext`` into ``ciphertext`` for ``recipients`` and signs the manifest.

    A fresh 32-byte content key per call encrypts each chunk (AES-256-GCM, counter nonce,
    AAD binding the context and the chunk's position); HPKE wraps it to each recipient.
    ``ciphertext`` appears (atomically renamed into place) only once complete.

    Args:
        plaintext: The file to seal; it MUST NOT change while it is read.
        ciphertext: Where to write the blob; replaced if it exists.
        ctx: What the hop is.
        sender_key: The sender's Ed25519 key.
        recipients: The primary recipient (``ctx.recipient``) and any further ones.
        chunk_size: Plaintext bytes per chunk.
        ttl_seconds: How long from now the hop may be opened.
        now_ms: The current time in Unix milliseconds (for tests).

    Returns:
        The serialized SignedManifest.

    Raises:
        ValueError: If an argument is out of range or the recipients are inconsistent.
        SealError: ``io_error`` if a file cannot be read or written, or changes meanwhile.
    """
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    if ttl_seconds < 1:
        raise ValueError("ttl_seconds must be positive")
    ids = [r.spiffe_id for r in recipients]
    for spiffe_id in ids:
        check_id("recipient", spiffe_id)
    if ctx.recipient not in ids or len(set(ids)) != len(ids) or len(ids) > MAX_RECIPIENTS:
        raise ValueError("recipients must be distinct, at most 16, and include ctx.recipient")
    now = _now_ms() if now_ms is None else now_ms
    try:
        length = plaintext.stat().st_size
        count = chunk_count_for(length, chunk_size)
        key = AESGCM.generate_key(bit_length=256)
        binding = context_binding(
            PROTOCOL_VERSION, ctx.run_id, ctx.hop_index, ctx.sender, ctx.recipient
        )
        prefix = CHUNK_DOMAIN + binding + count.to_bytes(8, "big")
        aead, plain = AESGCM(key), bytearray(min(chunk_size, length))
        # Both hashes of each sealed chunk (its own, and the whole blob's) run in a worker
        # thread while this one encrypts and writes the next chunk.
        with (
            plaintext.open("rb", buffering=0) as src,
            AtomicFile(ciphertext) as dst,
            HashedBuffers(len(plain) + TAG_BYTES, count=3, per_chunk=True) as sealed,
        ):
            for i in range(count):
                size = min(chunk_size, length - i * chunk_size)
                chunk, out = memoryview(plain)[:size], sealed.next(size + TAG_BYTES)
                if fill(src, chunk) != size:
                    raise SealError("io_error", f"{plaintext} shrank while it was sealed")
                aead.encrypt_into(chunk_nonce(i), chunk, chunk_aad(prefix, i, count), out)
                sealed.hash(out)
                dst.write(out)
            if src.read(1):
                raise SealError("io_error", f"{plaintext} grew while it was sealed")
            hashes, ciphertext_sha256 = sealed.chunk_digests(), sealed.hexdigest()
            dst.commit()
    except OSError as exc:
        raise SealError("io_error", f"cannot seal {plaintext}: {exc.strerror or exc}") from None
    manifest = envelope_pb2.HopManifest(
        version=PROTOCOL_VERSION,
        run_id=ctx.run_id,
        hop_index=ctx.hop_index,
        sender=ctx.sender,
        recipient=ctx.recipient,
        sender_key_fingerprint=fingerprint(sender_key.public_key()),
        wrapped_keys=[
            envelope_pb2.WrappedKey(
                recipient=r.spiffe_id,
                recipient_key_fingerprint=fingerprint(r.public_key),
                wrapped_key=_SUITE.encrypt(key, r.public_key, info=wrap_info(binding, r.spiffe_id)),
            )
            for r in recipients
        ],
        chunk_size=chunk_size,
        chunk_count=count,
        plaintext_length=length,
        ciphertext_length=length + TAG_BYTES * count,
        ciphertext_sha256=ciphertext_sha256,
        chunk_sha256=hashes,
        schema_hash=ctx.schema_hash,
        plan_hash=ctx.plan_hash,
        previous_manifest_hash=ctx.previous_manifest_hash,
        created_ms=now,
        expires_ms=now + ttl_seconds * 1000,
    ).SerializeToString(deterministic=True)
    signature = sender_key.sign(SIGNATURE_DOMAIN + manifest)
    return envelope_pb2.SignedManifest(manifest=manifest, signature=signature).SerializeToString()


def open_file(
    ciphertext: Path | Tail,
    plaintext: Path,
    signed: bytes,
    *,
    me: str,
    my_key: x25519.X25519PrivateKey,
    expect: Expectation,
    sender_key: ed25519.Ed25519PublicKey,
    replay: ReplayGuard,
    now_ms: int | None = None,
    max_manifest_bytes: int = MAX_MANIFEST_BYTES,
) -> HopManifest:
    """Verifies a sealed hop and decrypts it to ``plaintext``.

    Checks, in this order, each with its own :class:`SealError` reason: sizes
    (``oversized``); the signature over the exact received bytes and the manifest's
    consistency (``malformed``, ``unsupported_version``, ``bad_signature``; then
    ``oversized`` for a declared plaintext over the limit); recipient is ``me``
    (``wrong_recipient``); run, hop, sender, plan and schema (``wrong_context``); previous
    manifest hash (``broken_chain``); expiry (``expired``); the replay guard (``replay``,
    ``equivocation``, ``rollback``); unwrapping my content key (``unwrap_failed``); per
    chunk, its SHA-256 against the manifest, then AEAD (``truncated``, ``chunk_hash``,
    ``chunk_auth``); count and length (``length_mismatch``); the whole blob's SHA-256
    (``ciphertext_hash``: for a :class:`~baton.security.streaming.Tail` that names a
    ``sha256``, the hash its writer checked the same bytes against, not hashed again). A
    chunk is decrypted only after its hash matched. Plaintext is
    written to a temporary file beside ``plaintext``; once every check passed it is made
    durable, the hop is recorded in ``replay``, and only then is it renamed into place. A
    failure leaves ``plaintext`` as it was; a crash between recording and renaming loses
    this hop at this site (a retry is then a ``replay``).

    Args:
        ciphertext: The blob as received, or a :class:`~baton.security.streaming.Tail` of
            it while it is still being received (opened chunk by chunk as it arrives;
            its announced size stands for the file's size in the size check).
        plaintext: Where the decrypted file goes; replaced if it exists.
        signed: The SignedManifest bytes as received.
        me: The receiver's SPIFFE id.
        my_key: The receiver's X25519 key.
        expect: What the receiver expects of this hop.
        sender_key: The expected sender's Ed25519 key, from its certificate.
        replay: Which hops this receiver already accepted.
        now_ms: The current time in Unix milliseconds (for tests).
        max_manifest_bytes: Largest SignedManifest accepted.

    Returns:
        The verified manifest; its ``digest`` is the next hop's previous manifest hash.

    Raises:
        SealError: For every failure, and no other exception.
    """
    try:
        return _open(
            ciphertext, plaintext, signed, me, my_key, expect, sender_key, replay, now_ms,
            max_manifest_bytes,
        )  # fmt: skip
    except OSError as exc:
        raise SealError(
            "io_error",
            f"cannot open the sealed hop: {exc.strerror or exc}",
            run_id=expect.run_id,
            hop=expect.hop_index,
        ) from None
    except SealError as exc:
        exc.run_id, exc.hop = expect.run_id, expect.hop_index
        raise


def _open(
    ciphertext: Path | Tail,
    plaintext: Path,
    signed: bytes,
    me: str,
    my_key: x25519.X25519PrivateKey,
    expect: Expectation,
    sender_key: ed25519.Ed25519PublicKey,
    replay: ReplayGuard,
    now_ms: int | None,
    max_manifest_bytes: int,
) -> HopManifest:
    """:func:`open_file` without its OSError translation."""
    if len(signed) > max_manifest_bytes:
        raise SealError("oversized", f"manifest of {len(signed)} bytes")
    blob_size = ciphertext.size if isinstance(ciphertext, Tail) else ciphertext.stat().st_size
    bound = expect.max_plaintext_bytes + TAG_BYTES * (
        expect.max_plaintext_bytes // MIN_CHUNK_SIZE + 1
    )
    if blob_size > bound:
        raise SealError("oversized", f"blob of {blob_size} bytes")
    m = verify_manifest(signed, sender_key=sender_key, max_bytes=max_manifest_bytes)
    if m.plaintext_length > expect.max_plaintext_bytes:
        raise SealError("oversized", f"plaintext of {m.plaintext_length} bytes")
    mine = next((k for k in m.wrapped_keys if k.recipient == me), None)
    if mine is None:
        raise SealError("wrong_recipient", f"sealed to {m.recipient!r}, not to {me!r}")
    for name in ("run_id", "hop_index", "sender", "plan_hash"):
        if getattr(m, name) != getattr(expect, name):
            raise SealError("wrong_context", f"{name} is not the expected one")
    if expect.schema_hash is not None and m.schema_hash != expect.schema_hash:
        raise SealError("wrong_context", "schema_hash is not the expected one")
    if m.previous_manifest_hash != expect.previous_manifest_hash:
        raise SealError("broken_chain", "previous manifest hash does not match")
    now = _now_ms() if now_ms is None else now_ms
    if now > m.expires_ms or m.created_ms > now + CLOCK_SKEW_MS:
        raise SealError("expired", "outside the manifest's validity window")
    verdict = replay.check(m.run_id, m.hop_index, m.digest)
    if verdict != "fresh":
        raise SealError(verdict, "this hop was already accepted, or a later one")
    if mine.key_fingerprint != fingerprint(my_key.public_key()):
        raise SealError("unwrap_failed", "the content key is wrapped to another key")
    binding = context_binding(m.version, m.run_id, m.hop_index, m.sender, m.recipient)
    try:
        key = _SUITE.decrypt(mine.wrapped, my_key, info=wrap_info(binding, me))
    except (InvalidTag, ValueError):
        raise SealError("unwrap_failed", "the content key does not decrypt") from None
    if len(key) != KEY_BYTES:
        raise SealError("unwrap_failed", "the content key has the wrong length")
    aead, written = AESGCM(key), 0
    prefix = CHUNK_DOMAIN + binding + m.chunk_count.to_bytes(8, "big")
    # A blob still arriving whose writer checks it against a named hash is hashed once:
    # by its writer (a download), not here again.
    vouched = ciphertext if isinstance(ciphertext, Tail) and ciphertext.sha256 else None
    plain = memoryview(bytearray(min(m.chunk_size, m.plaintext_length)))
    with (
        ciphertext if isinstance(ciphertext, Tail) else ciphertext.open("rb", buffering=0) as src,
        AtomicFile(plaintext) as dst,
        HashedBuffers(
            len(plain) + TAG_BYTES, count=3, per_chunk=True, whole=vouched is None
        ) as sealed,
    ):

        def open_chunk(i: int, chunk: memoryview, digest: Future[bytes | None]) -> int:
            """Decrypts chunk ``i`` once the worker's hash of it matched the signed one."""
            if digest.result() != m.chunk_hashes[i]:
                raise SealError("chunk_hash", f"chunk {i} is not the signed one")
            out = plain[: len(chunk) - TAG_BYTES]
            try:
                aead.decrypt_into(chunk_nonce(i), chunk, chunk_aad(prefix, i, m.chunk_count), out)
            except InvalidTag:
                raise SealError("chunk_auth", f"chunk {i} fails authentication") from None
            dst.write(out)
            return len(out)

        # One chunk ahead: the worker hashes chunk i while this thread decrypts chunk i - 1.
        ahead: tuple[int, memoryview, Future[bytes | None]] | None = None
        for i in range(m.chunk_count):
            size = min(m.chunk_size, m.plaintext_length - i * m.chunk_size)
            chunk = sealed.next(size + TAG_BYTES)
            if fill(src, chunk) != len(chunk):
                raise SealError("truncated", f"the blob ends inside chunk {i}")
            queued = (i, chunk, sealed.hash(chunk))
            if ahead is not None:
                written += open_chunk(*ahead)
            ahead = queued
        if ahead is not None:
            written += open_chunk(*ahead)
        if src.read(1) or written != m.plaintext_length:
            raise SealError("length_mismatch", "the blob is longer than its chunks")
        whole = sealed.hexdigest() if vouched is None else vouched.checked_sha256
        if whole != m.ciphertext_sha256:
            raise SealError("ciphertext_hash", "the blob's SHA-256 is not the signed one")
        dst.sync()
        verdict = replay.accept(m.run_id, m.hop_index, m.digest)
        if verdict != "fresh":
            raise SealError(verdict, "another call accepted this hop meanwhile")
        dst.commit()
    return m


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
