"""The attack suite: what a relay, a network attacker or a faulty sender may try on a hop.

Every case asserts the exact rejection reason and that no plaintext (nor a temporary
file) appeared. "Relay" cases change bytes the coordinator handles; "sender-signed"
cases re-sign an inconsistent manifest with the sender's own key, to show that the
later checks (AEAD, unwrap, lengths) hold even when the signature does.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from baton.errors import PkiError, SealError
from baton.security.envelope import Expectation
from baton.security.keys import (
    certify,
    generate_keys,
    load_encryption_key,
    load_signing_key,
    make_key_request,
    verify_party_keys,
)
from baton.security.manifest import MAX_CHUNK_SIZE, MAX_MANIFEST_BYTES, SIGNATURE_DOMAIN, TAG_BYTES
from baton.security.pki import Identity, create_ca
from baton.security.replay import MemoryReplayGuard
from baton.v1 import envelope_pb2
from tests.unit.baton.test_envelope import (
    CHUNK,
    NOW,
    RUN,
    Party,
    Sealed,
    expect,
    new_party,
    open_as,
    rejected,
    seal,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric import ed25519

SPAN = CHUNK + TAG_BYTES
"""Bytes of one full ciphertext chunk."""


def _parts(signed: bytes) -> tuple[envelope_pb2.HopManifest, bytes]:
    outer = envelope_pb2.SignedManifest.FromString(signed)
    return envelope_pb2.HopManifest.FromString(outer.manifest), outer.signature


def relay_edit(sealed: Sealed, mutate: Callable[[envelope_pb2.HopManifest], None]) -> bytes:
    """The manifest changed by someone without the sender's key: the old signature kept."""
    manifest, signature = _parts(sealed.signed)
    mutate(manifest)
    body = manifest.SerializeToString()
    return envelope_pb2.SignedManifest(manifest=body, signature=signature).SerializeToString()


def sender_signed(
    sealed: Sealed,
    mutate: Callable[[envelope_pb2.HopManifest], None],
    signer: ed25519.Ed25519PrivateKey | None = None,
) -> bytes:
    """The manifest changed and signed again, by the sender unless ``signer`` is given."""
    manifest, _ = _parts(sealed.signed)
    mutate(manifest)
    body = manifest.SerializeToString()
    key = signer or sealed.sender.signing
    return envelope_pb2.SignedManifest(
        manifest=body, signature=key.sign(SIGNATURE_DOMAIN + body)
    ).SerializeToString()


def chunks(blob: bytes) -> list[bytes]:
    return [blob[i : i + SPAN] for i in range(0, len(blob), SPAN)]


@pytest.fixture
def sender() -> Party:
    return new_party("st-mary")


@pytest.fixture
def receiver() -> Party:
    return new_party("st-john")


@pytest.fixture
def hop(tmp_path: Path, sender: Party, receiver: Party) -> Sealed:
    """A five-chunk hop (the last one short) from ``sender`` to ``receiver``."""
    return seal(tmp_path, sender, [receiver], os.urandom(4 * CHUNK + 123), hop=2)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "opened"


def _tamper(hop: Sealed, change: Callable[[list[bytes]], list[bytes]]) -> None:
    hop.ciphertext.write_bytes(b"".join(change(chunks(hop.ciphertext.read_bytes()))))


# The blob ------------------------------------------------------------------------------


def test_bit_flip_in_a_chunk(hop: Sealed, receiver: Party, out: Path) -> None:
    blob = bytearray(hop.ciphertext.read_bytes())
    blob[SPAN + 100] ^= 0x01
    hop.ciphertext.write_bytes(bytes(blob))
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))


def test_bit_flip_in_a_tag(hop: Sealed, receiver: Party, out: Path) -> None:
    blob = bytearray(hop.ciphertext.read_bytes())
    blob[-1] ^= 0x80
    hop.ciphertext.write_bytes(bytes(blob))
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))


def test_chunk_swap(hop: Sealed, receiver: Party, out: Path) -> None:
    _tamper(hop, lambda c: [c[1], c[0], *c[2:]])
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))


@pytest.mark.parametrize(
    "keep", [0, 1, SPAN, 3 * SPAN + 7, -1], ids=["empty", "one-byte", "boundary", "mid", "last"]
)
def test_truncation(hop: Sealed, receiver: Party, out: Path, keep: int) -> None:
    blob = hop.ciphertext.read_bytes()
    hop.ciphertext.write_bytes(blob[:keep])
    rejected("truncated", out, lambda: open_as(hop, receiver, out))


def test_dropped_chunk(hop: Sealed, receiver: Party, out: Path) -> None:
    _tamper(hop, lambda c: [c[0], *c[2:]])
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))


def test_duplicated_chunk(hop: Sealed, receiver: Party, out: Path) -> None:
    _tamper(hop, lambda c: [c[0], c[1], c[1], *c[2:]])
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))


def test_duplicated_last_chunk_after_the_end(hop: Sealed, receiver: Party, out: Path) -> None:
    _tamper(hop, lambda c: [*c, c[-1]])
    rejected("length_mismatch", out, lambda: open_as(hop, receiver, out))


def test_chunk_spliced_from_another_transfer(
    tmp_path: Path, hop: Sealed, sender: Party, receiver: Party, out: Path
) -> None:
    # Same sender, recipient, run and hop: only the transfer (and its content key) differs.
    other = seal(tmp_path, sender, [receiver], os.urandom(4 * CHUNK + 123), hop=2, name="other")
    donor = chunks(other.ciphertext.read_bytes())
    _tamper(hop, lambda c: [c[0], donor[1], *c[2:]])
    rejected("chunk_hash", out, lambda: open_as(hop, receiver, out))
    # Even a sender that signs the spliced chunk's hash cannot make it decrypt here.
    spliced = chunks(hop.ciphertext.read_bytes())

    def sign_spliced(m: envelope_pb2.HopManifest) -> None:
        m.chunk_sha256[1] = hashlib.sha256(spliced[1]).digest()
        m.ciphertext_sha256 = hashlib.sha256(b"".join(spliced)).hexdigest()

    signed = sender_signed(hop, sign_spliced)
    rejected("chunk_auth", out, lambda: open_as(hop, receiver, out, signed=signed))


def test_reordered_chunks_fail_aead_even_with_signed_hashes(
    hop: Sealed, receiver: Party, out: Path
) -> None:
    _tamper(hop, lambda c: [c[1], c[0], *c[2:]])
    swapped = chunks(hop.ciphertext.read_bytes())

    def sign_swapped(m: envelope_pb2.HopManifest) -> None:
        m.chunk_sha256[0], m.chunk_sha256[1] = m.chunk_sha256[1], m.chunk_sha256[0]
        m.ciphertext_sha256 = hashlib.sha256(b"".join(swapped)).hexdigest()

    signed = sender_signed(hop, sign_swapped)
    rejected("chunk_auth", out, lambda: open_as(hop, receiver, out, signed=signed))


def test_a_blob_hash_that_does_not_match(hop: Sealed, receiver: Party, out: Path) -> None:
    def wrong_address(m: envelope_pb2.HopManifest) -> None:
        m.ciphertext_sha256 = hashlib.sha256(b"another blob").hexdigest()

    signed = sender_signed(hop, wrong_address)
    rejected("ciphertext_hash", out, lambda: open_as(hop, receiver, out, signed=signed))


# Who and when --------------------------------------------------------------------------


def test_replay_of_an_old_hop(hop: Sealed, receiver: Party, out: Path, tmp_path: Path) -> None:
    guard = MemoryReplayGuard()
    open_as(hop, receiver, tmp_path / "first", guard=guard)
    rejected("replay", out, lambda: open_as(hop, receiver, out, guard=guard))


def test_rollback_to_an_older_hop_index(
    tmp_path: Path, sender: Party, receiver: Party, out: Path
) -> None:
    old = seal(tmp_path, sender, [receiver], b"old model", hop=2, name="old")
    new = seal(tmp_path, sender, [receiver], b"new model", hop=5, name="new")
    guard = MemoryReplayGuard()
    open_as(new, receiver, tmp_path / "new-opened", guard=guard)
    rejected("rollback", out, lambda: open_as(old, receiver, out, guard=guard))


def test_equivocation(tmp_path: Path, sender: Party, receiver: Party, out: Path) -> None:
    one = seal(tmp_path, sender, [receiver], b"model one", hop=1, name="one")
    two = seal(tmp_path, sender, [receiver], b"model two", hop=1, name="two")
    guard = MemoryReplayGuard()
    open_as(one, receiver, tmp_path / "one-opened", guard=guard)
    rejected("equivocation", out, lambda: open_as(two, receiver, out, guard=guard))


def test_misdelivery_to_another_site(hop: Sealed, out: Path) -> None:
    rejected("wrong_recipient", out, lambda: open_as(hop, new_party("st-luke"), out))


def test_forged_sender(tmp_path: Path, sender: Party, receiver: Party, out: Path) -> None:
    # The relay seals its own model, names the real sender, and signs with its own key.
    forger = new_party("relay")
    disguised = Party(
        spiffe_id=sender.spiffe_id, signing=forger.signing, encryption=forger.encryption
    )
    forged = seal(tmp_path, disguised, [receiver], b"poisoned model", hop=2)
    rejected(
        "bad_signature",
        out,
        lambda: open_as(forged, receiver, out, sender_key=sender.signing.public_key()),
    )


def test_wrong_expected_sender(tmp_path: Path, receiver: Party, out: Path) -> None:
    # A genuine hop from st-luke, where the receiver expects one from st-mary.
    luke, mary = new_party("st-luke"), new_party("st-mary")
    sealed = seal(tmp_path, luke, [receiver], b"model", hop=2)
    from_mary = dataclasses.replace(expect(sealed), sender=mary.spiffe_id)
    rejected(
        "bad_signature",
        out,
        lambda: open_as(
            sealed, receiver, out, expectation=from_mary, sender_key=mary.signing.public_key()
        ),
    )
    # Verified with st-luke's key (say the coordinator named it), the sender id still differs.
    rejected("wrong_context", out, lambda: open_as(sealed, receiver, out, expectation=from_mary))


def test_broken_hash_chain(hop: Sealed, receiver: Party, out: Path) -> None:
    wrong = expect(hop, previous=hashlib.sha256(b"another history").hexdigest())
    rejected("broken_chain", out, lambda: open_as(hop, receiver, out, expectation=wrong))


OTHER_HASH = hashlib.sha256(b"something else").hexdigest()
CONTEXT_CHANGES: dict[str, Callable[[Expectation], Expectation]] = {
    "run_id": lambda e: dataclasses.replace(e, run_id="run-2"),
    "hop_index": lambda e: dataclasses.replace(e, hop_index=e.hop_index + 1),
    "plan_hash": lambda e: dataclasses.replace(e, plan_hash=OTHER_HASH),
    "schema_hash": lambda e: dataclasses.replace(e, schema_hash=OTHER_HASH),
}


@pytest.mark.parametrize("field", sorted(CONTEXT_CHANGES))
def test_wrong_context(hop: Sealed, receiver: Party, out: Path, field: str) -> None:
    wrong = CONTEXT_CHANGES[field](expect(hop))
    rejected("wrong_context", out, lambda: open_as(hop, receiver, out, expectation=wrong))


def test_expired_manifest(hop: Sealed, receiver: Party, out: Path) -> None:
    late = NOW + 24 * 3600 * 1000 + 1
    rejected("expired", out, lambda: open_as(hop, receiver, out, now_ms=late))


def test_manifest_from_the_future(hop: Sealed, receiver: Party, out: Path) -> None:
    early = NOW - 6 * 60 * 1000
    rejected("expired", out, lambda: open_as(hop, receiver, out, now_ms=early))


# The manifest as bytes -----------------------------------------------------------------

RELAY_EDITS: dict[str, Callable[[envelope_pb2.HopManifest], None]] = {
    "version": lambda m: setattr(m, "version", 2),
    "run_id": lambda m: setattr(m, "run_id", "run-2"),
    "hop_index": lambda m: setattr(m, "hop_index", m.hop_index + 1),
    "sender": lambda m: setattr(m, "sender", "spiffe://acme/site/relay"),
    "recipient": lambda m: setattr(m, "recipient", "spiffe://acme/site/relay"),
    "sender_key_fingerprint": lambda m: setattr(m, "sender_key_fingerprint", "0" * 64),
    "wrapped_keys": lambda m: setattr(m.wrapped_keys[0], "recipient", "spiffe://acme/site/x"),
    "chunk_size": lambda m: setattr(m, "chunk_size", m.chunk_size * 2),
    "chunk_count": lambda m: setattr(m, "chunk_count", m.chunk_count - 1),
    "plaintext_length": lambda m: setattr(m, "plaintext_length", m.plaintext_length - 1),
    "ciphertext_length": lambda m: setattr(m, "ciphertext_length", m.ciphertext_length + 1),
    "ciphertext_sha256": lambda m: setattr(m, "ciphertext_sha256", "f" * 64),
    "chunk_sha256": lambda m: m.chunk_sha256.__setitem__(0, bytes(32)),
    "schema_hash": lambda m: setattr(m, "schema_hash", "a" * 64),
    "plan_hash": lambda m: setattr(m, "plan_hash", "b" * 64),
    "previous_manifest_hash": lambda m: setattr(m, "previous_manifest_hash", "c" * 64),
    "created_ms": lambda m: setattr(m, "created_ms", m.created_ms - 1),
    "expires_ms": lambda m: setattr(m, "expires_ms", m.expires_ms + 10**9),
}


def test_every_manifest_field_has_a_relay_edit() -> None:
    assert set(RELAY_EDITS) == {f.name for f in envelope_pb2.HopManifest.DESCRIPTOR.fields}


@pytest.mark.parametrize("field", sorted(RELAY_EDITS))
def test_manifest_edited_by_the_relay(hop: Sealed, receiver: Party, out: Path, field: str) -> None:
    edited = relay_edit(hop, RELAY_EDITS[field])
    assert edited != hop.signed
    rejected("bad_signature", out, lambda: open_as(hop, receiver, out, signed=edited))


def test_signature_replaced(hop: Sealed, receiver: Party, out: Path) -> None:
    manifest, _ = _parts(hop.signed)
    for signature in (b"", bytes(64), os.urandom(64), os.urandom(65)):
        signed = envelope_pb2.SignedManifest(
            manifest=manifest.SerializeToString(), signature=signature
        ).SerializeToString()
        rejected(
            "bad_signature", out, functools.partial(open_as, hop, receiver, out, signed=signed)
        )


def test_a_non_canonical_envelope(hop: Sealed, receiver: Party, out: Path) -> None:
    # Unknown field 15 appended: the signature still verifies, the bytes are not canonical.
    padded = hop.signed + b"\x7a\x01\x00"
    rejected("malformed", out, lambda: open_as(hop, receiver, out, signed=padded))


@pytest.mark.parametrize("garbage", [b"", b"\xff", b"\x0a\xff\xff\xff\xff\x0f", os.urandom(200)])
def test_malformed_protobuf(hop: Sealed, receiver: Party, out: Path, garbage: bytes) -> None:
    rejected("malformed", out, lambda: open_as(hop, receiver, out, signed=garbage))


def test_signed_bytes_that_are_not_a_manifest(hop: Sealed, receiver: Party, out: Path) -> None:
    body = b"\xff\xff\xff"
    signed = envelope_pb2.SignedManifest(
        manifest=body, signature=hop.sender.signing.sign(SIGNATURE_DOMAIN + body)
    ).SerializeToString()
    rejected("malformed", out, lambda: open_as(hop, receiver, out, signed=signed))


def test_a_signature_for_another_purpose(hop: Sealed, receiver: Party, out: Path) -> None:
    manifest, _ = _parts(hop.signed)
    body = manifest.SerializeToString()
    undomained = envelope_pb2.SignedManifest(
        manifest=body, signature=hop.sender.signing.sign(body)
    ).SerializeToString()
    rejected("bad_signature", out, lambda: open_as(hop, receiver, out, signed=undomained))


INCONSISTENCIES: dict[str, Callable[[envelope_pb2.HopManifest], None]] = {
    "chunk_count": RELAY_EDITS["chunk_count"],
    "plaintext_length": RELAY_EDITS["plaintext_length"],
    "ciphertext_length": RELAY_EDITS["ciphertext_length"],
    "extra_chunk_hash": lambda m: m.chunk_sha256.append(bytes(32)),
    "short_chunk_hash": lambda m: m.chunk_sha256.__setitem__(0, bytes(31)),
    "undersized_chunks": lambda m: setattr(m, "chunk_size", 1024),
    "hash_not_hex": lambda m: setattr(m, "plan_hash", m.plan_hash.upper()),
    "empty_sender": lambda m: setattr(m, "sender", ""),
    "expires_at_creation": lambda m: setattr(m, "expires_ms", m.created_ms),
    "no_primary_key": lambda m: setattr(m.wrapped_keys[0], "recipient", "spiffe://acme/site/x"),
    "short_wrapped_key": lambda m: setattr(m.wrapped_keys[0], "wrapped_key", b"k" * 79),
    "duplicate_recipient": lambda m: m.wrapped_keys.append(m.wrapped_keys[0]),
    "other_signing_key": RELAY_EDITS["sender_key_fingerprint"],
}


@pytest.mark.parametrize("case", sorted(INCONSISTENCIES))
def test_an_inconsistent_manifest_even_if_signed(
    hop: Sealed, receiver: Party, out: Path, case: str
) -> None:
    signed = sender_signed(hop, INCONSISTENCIES[case])
    rejected("malformed", out, lambda: open_as(hop, receiver, out, signed=signed))


def test_an_unsupported_version(hop: Sealed, receiver: Party, out: Path) -> None:
    signed = sender_signed(hop, RELAY_EDITS["version"])
    rejected("unsupported_version", out, lambda: open_as(hop, receiver, out, signed=signed))


# Sizes ---------------------------------------------------------------------------------


def test_oversized_manifest(hop: Sealed, receiver: Party, out: Path) -> None:
    huge = hop.signed + b"\x00" * (MAX_MANIFEST_BYTES + 1 - len(hop.signed))
    rejected("oversized", out, lambda: open_as(hop, receiver, out, signed=huge))


def test_oversized_blob(hop: Sealed, receiver: Party, out: Path) -> None:
    limit = dataclasses.replace(expect(hop), max_plaintext_bytes=CHUNK)
    rejected("oversized", out, lambda: open_as(hop, receiver, out, expectation=limit))
    # A small blob does not help when the signed manifest announces too much plaintext.
    hop.ciphertext.write_bytes(b"")
    rejected("oversized", out, lambda: open_as(hop, receiver, out, expectation=limit))


def test_oversized_chunk(hop: Sealed, receiver: Party, out: Path) -> None:
    signed = sender_signed(hop, lambda m: setattr(m, "chunk_size", MAX_CHUNK_SIZE + 1))
    rejected("oversized", out, lambda: open_as(hop, receiver, out, signed=signed))


# Keys ----------------------------------------------------------------------------------


def test_a_key_wrapped_to_someone_else(tmp_path: Path, sender: Party, out: Path) -> None:
    a, b = new_party("a"), new_party("b")
    sealed = seal(tmp_path, sender, [a, b], b"model")

    def swap_keys(m: envelope_pb2.HopManifest) -> None:
        first, second = m.wrapped_keys
        first.wrapped_key, second.wrapped_key = second.wrapped_key, first.wrapped_key

    signed = sender_signed(sealed, swap_keys)
    rejected("unwrap_failed", out, lambda: open_as(sealed, a, out, signed=signed))

    def wrong_fingerprint(m: envelope_pb2.HopManifest) -> None:
        m.wrapped_keys[0].recipient_key_fingerprint = "0" * 64

    signed = sender_signed(sealed, wrong_fingerprint)
    rejected("unwrap_failed", out, lambda: open_as(sealed, a, out, signed=signed))


def test_a_key_from_a_foreign_ca(tmp_path: Path) -> None:
    # The relay hands the sender "the next site's keys", certified by a CA of its own.
    site = Identity(federation="acme", kind="site", name="st-john")
    create_ca(tmp_path / "ours", "acme")
    create_ca(tmp_path / "relays", "acme")
    files = generate_keys(tmp_path / "keys")
    request = make_key_request(
        site, load_signing_key(files.signing), load_encryption_key(files.encryption).public_key()
    )
    signing_pem, encryption_pem = certify(tmp_path / "relays", request, identity=site)
    pinned = (tmp_path / "ours" / "ca.pem").read_bytes()
    with pytest.raises(PkiError, match="was not issued by the pinned CA"):
        verify_party_keys(pinned, signing_pem, encryption_pem, site)


def test_state_is_unharmed_by_an_attack(hop: Sealed, receiver: Party, tmp_path: Path) -> None:
    previous = tmp_path / "model"
    previous.write_bytes(b"the previous verified model")
    blob = bytearray(hop.ciphertext.read_bytes())
    blob[5] ^= 1
    hop.ciphertext.write_bytes(bytes(blob))
    guard = MemoryReplayGuard()
    with pytest.raises(SealError) as caught:
        open_as(hop, receiver, previous, guard=guard)
    assert caught.value.reason == "chunk_hash"
    assert previous.read_bytes() == b"the previous verified model"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert guard.check(RUN, hop.hop, "any") == "fresh"
