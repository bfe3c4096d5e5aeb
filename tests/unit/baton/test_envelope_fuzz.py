"""Fuzzing the envelope: random and mutated manifests and blobs raise nothing but SealError."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton.errors import REASONS, SealError
from baton.security.envelope import open_file
from baton.security.manifest import SIGNATURE_DOMAIN, verify_manifest
from baton.security.replay import MemoryReplayGuard
from baton.v1 import envelope_pb2
from tests.unit.baton.test_envelope import CHUNK, NOW, Party, Sealed, expect, new_party, seal

if TYPE_CHECKING:
    from collections.abc import Iterator

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Scene:
    """A valid hop and its receiver, sealed once for a whole fuzz test."""

    hop: Sealed
    receiver: Party
    blob: bytes


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    tmp = tmp_path_factory.mktemp("fuzz")
    receiver = new_party("st-john")
    hop = seal(tmp, new_party("st-mary"), [receiver], bytes(range(256)) * 40, hop=1)
    return Scene(hop=hop, receiver=receiver, blob=hop.ciphertext.read_bytes())


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _open(
    scene: Scene, work: Path, signed: bytes, blob: bytes, *, signed_anew: bool = False
) -> None:
    """Opens ``blob`` with ``signed``: it MUST fail with SealError and leave no file, or
    succeed on the original bytes (or on a manifest the sender itself signed anew)."""
    ciphertext, out = work / "blob", work / "out"
    ciphertext.write_bytes(blob)
    out.unlink(missing_ok=True)
    reason: str | None = None
    try:
        open_file(
            ciphertext,
            out,
            signed,
            me=scene.receiver.spiffe_id,
            my_key=scene.receiver.encryption,
            expect=expect(scene.hop),
            sender_key=scene.hop.sender.signing.public_key(),
            replay=MemoryReplayGuard(),
            now_ms=NOW + 1000,
        )
    except SealError as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in REASONS
        assert not out.exists()
        assert sorted(p.name for p in work.iterdir()) == ["blob"]
    else:
        assert signed_anew or signed == scene.hop.signed
        assert blob == scene.blob
        assert out.read_bytes() == scene.hop.plaintext.read_bytes()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes flipped, inserted, deleted, or cut off."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_never_a_manifest(scene: Scene, data: bytes) -> None:
    with pytest.raises(SealError) as caught:
        verify_manifest(data, sender_key=scene.hop.sender.signing.public_key())
    assert caught.value.reason in {"malformed", "bad_signature", "oversized"}


@FUZZ
@given(data=st.data())
def test_mutated_manifests_raise_only_seal_errors(
    scene: Scene, workdir: Path, data: st.DataObject
) -> None:
    signed = data.draw(mutated(scene.hop.signed))
    _open(scene, workdir, signed, scene.blob)


@FUZZ
@given(data=st.data())
def test_mutated_blobs_raise_only_seal_errors(
    scene: Scene, workdir: Path, data: st.DataObject
) -> None:
    blob = data.draw(mutated(scene.blob))
    _open(scene, workdir, scene.hop.signed, blob)


def _fields(scene: Scene) -> st.SearchStrategy[envelope_pb2.HopManifest]:
    """Manifests near the real one: each field kept or replaced by a random value."""
    outer = envelope_pb2.SignedManifest.FromString(scene.hop.signed)
    real = envelope_pb2.HopManifest.FromString(outer.manifest)
    ints = st.integers(0, 2**32 - 1)
    longs = st.one_of(st.integers(0, 3 * CHUNK), st.integers(0, 2**64 - 1))
    text = st.text(max_size=300)
    hexes = st.text(alphabet="0123456789abcdefABC", min_size=63, max_size=65)

    @st.composite
    def build(draw: st.DrawFn) -> envelope_pb2.HopManifest:
        m = envelope_pb2.HopManifest()
        m.CopyFrom(real)
        for name, strategy in (
            ("version", ints),
            ("run_id", text),
            ("hop_index", ints),
            ("sender", text),
            ("recipient", text),
            ("chunk_size", ints),
            ("chunk_count", longs),
            ("plaintext_length", longs),
            ("ciphertext_length", longs),
            ("ciphertext_sha256", hexes),
            ("schema_hash", hexes),
            ("previous_manifest_hash", hexes),
            ("created_ms", longs),
            ("expires_ms", longs),
        ):
            if draw(st.booleans()) and draw(st.booleans()):
                setattr(m, name, draw(strategy))
        if draw(st.booleans()) and draw(st.booleans()):
            del m.chunk_sha256[draw(st.integers(0, len(m.chunk_sha256) - 1))]
        if draw(st.booleans()) and draw(st.booleans()):
            m.wrapped_keys[0].wrapped_key = draw(st.binary(max_size=100))
        return m

    return build()


@FUZZ
@given(data=st.data())
def test_validly_signed_nonsense_raises_only_seal_errors(
    scene: Scene, workdir: Path, data: st.DataObject
) -> None:
    manifest = data.draw(_fields(scene))
    body = manifest.SerializeToString()
    signature = scene.hop.sender.signing.sign(SIGNATURE_DOMAIN + body)
    signed = envelope_pb2.SignedManifest(manifest=body, signature=signature).SerializeToString()
    _open(scene, workdir, signed, scene.blob, signed_anew=True)
