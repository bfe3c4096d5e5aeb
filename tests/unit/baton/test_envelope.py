"""Tests of sealed hops: round trips, the manifest, the chain, and the replay guards.

The helpers at the top are shared with the attack and fuzz suites.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from baton.errors import REASONS, BatonError, SealError
from baton.security.envelope import Expectation, HopContext, RecipientKey, open_file, seal_file
from baton.security.keys import fingerprint
from baton.security.manifest import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_BYTES,
    HopManifest,
    verify_manifest,
)
from baton.security.replay import MemoryReplayGuard, ReplayGuard, SqliteReplayGuard, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

RUN = "run-1"
PLAN = hashlib.sha256(b"signed plan").hexdigest()
SCHEMA = hashlib.sha256(b"schema").hexdigest()
GENESIS = hashlib.sha256(b"the signed plan's bytes").hexdigest()
CHUNK = MIN_CHUNK_SIZE
NOW = 1_800_000_000_000
LIMIT = 1 << 30


@dataclass(frozen=True, kw_only=True, slots=True)
class Party:
    """A site with its application keys."""

    spiffe_id: str
    signing: ed25519.Ed25519PrivateKey
    encryption: x25519.X25519PrivateKey

    def recipient(self) -> RecipientKey:
        return RecipientKey(spiffe_id=self.spiffe_id, public_key=self.encryption.public_key())


def new_party(name: str) -> Party:
    return Party(
        spiffe_id=f"spiffe://acme/site/{name}",
        signing=ed25519.Ed25519PrivateKey.generate(),
        encryption=x25519.X25519PrivateKey.generate(),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Sealed:
    """One sealed hop on disk, with the party that sealed it."""

    sender: Party
    plaintext: Path
    ciphertext: Path
    signed: bytes
    hop: int


def seal(
    tmp: Path,
    sender: Party,
    recipients: Sequence[Party],
    data: bytes,
    *,
    hop: int = 0,
    previous: str = GENESIS,
    name: str = "hop",
    chunk_size: int = CHUNK,
) -> Sealed:
    """Seals ``data`` from ``sender`` to ``recipients[0]`` (primary) and the others."""
    plaintext, ciphertext = tmp / f"{name}.plain", tmp / f"{name}.sealed"
    plaintext.write_bytes(data)
    ctx = HopContext(
        run_id=RUN,
        hop_index=hop,
        sender=sender.spiffe_id,
        recipient=recipients[0].spiffe_id,
        previous_manifest_hash=previous,
        plan_hash=PLAN,
        schema_hash=SCHEMA,
    )
    signed = seal_file(
        plaintext,
        ciphertext,
        ctx=ctx,
        sender_key=sender.signing,
        recipients=[r.recipient() for r in recipients],
        chunk_size=chunk_size,
        now_ms=NOW,
    )
    return Sealed(sender=sender, plaintext=plaintext, ciphertext=ciphertext, signed=signed, hop=hop)


def expect(sealed: Sealed, *, previous: str = GENESIS) -> Expectation:
    """What an honest receiver of ``sealed`` expects."""
    return Expectation(
        run_id=RUN,
        hop_index=sealed.hop,
        sender=sealed.sender.spiffe_id,
        previous_manifest_hash=previous,
        plan_hash=PLAN,
        schema_hash=SCHEMA,
        max_plaintext_bytes=LIMIT,
    )


def open_as(
    sealed: Sealed,
    me: Party,
    out: Path,
    *,
    guard: ReplayGuard | None = None,
    signed: bytes | None = None,
    ciphertext: Path | None = None,
    expectation: Expectation | None = None,
    sender_key: ed25519.Ed25519PublicKey | None = None,
    now_ms: int = NOW + 1000,
) -> HopManifest:
    """Opens ``sealed`` as ``me`` into ``out``; every part can be swapped for an attack."""
    return open_file(
        ciphertext or sealed.ciphertext,
        out,
        sealed.signed if signed is None else signed,
        me=me.spiffe_id,
        my_key=me.encryption,
        expect=expectation or expect(sealed),
        sender_key=sender_key or sealed.sender.signing.public_key(),
        replay=guard or MemoryReplayGuard(),
        now_ms=now_ms,
    )


def rejected(reason: str, out: Path, attempt: Callable[[], object]) -> SealError:
    """Asserts that ``attempt`` fails with ``reason`` and leaves nothing at or beside ``out``."""
    before = set(out.parent.iterdir())
    with pytest.raises(SealError) as caught:
        attempt()
    assert caught.value.reason == reason, str(caught.value)
    assert not out.exists()
    assert set(out.parent.iterdir()) == before, "a temporary file was left behind"
    return caught.value


@pytest.fixture
def sender() -> Party:
    return new_party("st-mary")


@pytest.fixture
def receiver() -> Party:
    return new_party("st-john")


# Round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 123],
    ids=["empty", "one-byte", "short-chunk", "one-chunk", "two-chunks", "short-last-chunk"],
)
def test_round_trip_is_bit_identical(
    tmp_path: Path, sender: Party, receiver: Party, length: int
) -> None:
    data = os.urandom(length)
    sealed = seal(tmp_path, sender, [receiver], data)
    out = tmp_path / "out"
    manifest = open_as(sealed, receiver, out)
    assert out.read_bytes() == data
    count = max(1, -(-length // CHUNK))
    assert manifest.chunk_count == count
    assert manifest.plaintext_length == length
    assert sealed.ciphertext.stat().st_size == length + TAG_BYTES * count
    assert manifest.ciphertext_length == sealed.ciphertext.stat().st_size
    assert len(manifest.chunk_hashes) == count


def test_a_64_mib_model_round_trips_with_default_chunks(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    plaintext, ciphertext, out = tmp_path / "model", tmp_path / "sealed", tmp_path / "out"
    with plaintext.open("wb") as file:
        for _ in range(64):
            file.write(os.urandom(1 << 20))
    ctx = HopContext(
        run_id=RUN,
        hop_index=3,
        sender=sender.spiffe_id,
        recipient=receiver.spiffe_id,
        previous_manifest_hash=GENESIS,
        plan_hash=PLAN,
        schema_hash=SCHEMA,
    )
    signed = seal_file(
        plaintext, ciphertext, ctx=ctx, sender_key=sender.signing, recipients=[receiver.recipient()]
    )
    manifest = open_file(
        ciphertext,
        out,
        signed,
        me=receiver.spiffe_id,
        my_key=receiver.encryption,
        expect=Expectation(
            run_id=RUN,
            hop_index=3,
            sender=sender.spiffe_id,
            previous_manifest_hash=GENESIS,
            plan_hash=PLAN,
            max_plaintext_bytes=64 << 20,
        ),
        sender_key=sender.signing.public_key(),
        replay=MemoryReplayGuard(),
    )
    assert manifest.chunk_count == 64
    assert manifest.chunk_size == 1 << 20
    assert _sha256(out) == _sha256(plaintext)


def test_every_recipient_can_open_and_no_one_else(tmp_path: Path, sender: Party) -> None:
    primary, fallback, owner, outsider = (new_party(n) for n in ("a", "b", "owner", "x"))
    data = os.urandom(3 * CHUNK + 5)
    sealed = seal(tmp_path, sender, [primary, fallback, owner], data)
    for party in (primary, fallback, owner):
        out = tmp_path / f"out-{party.spiffe_id.rsplit('/', 1)[1]}"
        manifest = open_as(sealed, party, out)
        assert out.read_bytes() == data
        assert manifest.recipient == primary.spiffe_id
    assert [k.recipient for k in manifest.wrapped_keys] == [
        primary.spiffe_id,
        fallback.spiffe_id,
        owner.spiffe_id,
    ]
    out = tmp_path / "stolen"
    rejected("wrong_recipient", out, lambda: open_as(sealed, outsider, out))
    # The outsider claiming a recipient's name still lacks that recipient's key.
    impostor = Party(
        spiffe_id=fallback.spiffe_id, signing=outsider.signing, encryption=outsider.encryption
    )
    rejected("unwrap_failed", out, lambda: open_as(sealed, impostor, out))


def test_the_manifest_describes_the_blob(tmp_path: Path, sender: Party, receiver: Party) -> None:
    sealed = seal(tmp_path, sender, [receiver], os.urandom(2 * CHUNK + 1), hop=4)
    manifest = verify_manifest(sealed.signed, sender_key=sender.signing.public_key())
    blob = sealed.ciphertext.read_bytes()
    assert manifest.ciphertext_sha256 == hashlib.sha256(blob).hexdigest()
    chunks = [blob[i : i + CHUNK + TAG_BYTES] for i in range(0, len(blob), CHUNK + TAG_BYTES)]
    assert list(manifest.chunk_hashes) == [hashlib.sha256(c).digest() for c in chunks]
    assert manifest.sender_key_fingerprint == fingerprint(sender.signing.public_key())
    assert manifest.wrapped_keys[0].key_fingerprint == fingerprint(receiver.encryption.public_key())
    assert manifest.digest == hashlib.sha256(sealed.signed).hexdigest()
    assert (manifest.run_id, manifest.hop_index, manifest.sender, manifest.recipient) == (
        RUN,
        4,
        sender.spiffe_id,
        receiver.spiffe_id,
    )
    assert (manifest.plan_hash, manifest.schema_hash) == (PLAN, SCHEMA)
    assert manifest.previous_manifest_hash == GENESIS
    assert manifest.created_ms == NOW
    assert manifest.expires_ms == NOW + 24 * 3600 * 1000


def test_each_seal_uses_a_fresh_key_and_hides_the_plaintext(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    canary = b"\x00\x00\xc0\x7f" * (CHUNK // 2)  # a float32 NaN pattern, two chunks long
    first = seal(tmp_path, sender, [receiver], canary, name="first")
    second = seal(tmp_path, sender, [receiver], canary, name="second")
    one, two = first.ciphertext.read_bytes(), second.ciphertext.read_bytes()
    assert one != two
    for blob in (one, two, first.signed, second.signed):
        assert canary[:64] not in blob


def test_hops_chain_by_manifest_digest(tmp_path: Path) -> None:
    a, b, c = new_party("a"), new_party("b"), new_party("c")
    first = seal(tmp_path, a, [b], b"weights v1" * 500, name="h0")
    got = open_as(first, b, tmp_path / "at-b")
    second = seal(tmp_path, b, [c], b"weights v2" * 500, hop=1, previous=got.digest, name="h1")
    opened = open_as(second, c, tmp_path / "at-c", expectation=expect(second, previous=got.digest))
    assert opened.previous_manifest_hash == hashlib.sha256(first.signed).hexdigest()
    assert (tmp_path / "at-c").read_bytes() == b"weights v2" * 500


def test_opened_files_are_private(tmp_path: Path, sender: Party, receiver: Party) -> None:
    sealed = seal(tmp_path, sender, [receiver], b"x" * 100)
    open_as(sealed, receiver, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600
    assert stat.S_IMODE(sealed.ciphertext.stat().st_mode) == 0o600


def test_an_existing_plaintext_is_replaced_only_on_success(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    out = tmp_path / "model"
    out.write_bytes(b"previous verified model")
    sealed = seal(tmp_path, sender, [receiver], b"new model" * 1000)
    with pytest.raises(SealError):
        open_as(sealed, receiver, out, expectation=expect(sealed, previous=PLAN))
    assert out.read_bytes() == b"previous verified model"
    open_as(sealed, receiver, out)
    assert out.read_bytes() == b"new model" * 1000


def test_a_persistent_guard_remembers_across_restarts(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    sealed = seal(tmp_path, sender, [receiver], b"m" * 10)
    db = tmp_path / "replay.db"
    open_as(sealed, receiver, tmp_path / "first", guard=SqliteReplayGuard(db))
    out = tmp_path / "again"
    rejected("replay", out, lambda: open_as(sealed, receiver, out, guard=SqliteReplayGuard(db)))


def test_a_failed_open_can_be_retried(tmp_path: Path, sender: Party, receiver: Party) -> None:
    sealed = seal(tmp_path, sender, [receiver], os.urandom(3 * CHUNK))
    guard, out = MemoryReplayGuard(), tmp_path / "out"
    good = sealed.ciphertext.read_bytes()
    sealed.ciphertext.write_bytes(good[:-1])
    rejected("truncated", out, lambda: open_as(sealed, receiver, out, guard=guard))
    sealed.ciphertext.write_bytes(good)
    open_as(sealed, receiver, out, guard=guard)
    assert out.read_bytes() == sealed.plaintext.read_bytes()


def test_a_missing_blob_is_a_local_io_error(tmp_path: Path, sender: Party, receiver: Party) -> None:
    sealed = seal(tmp_path, sender, [receiver], b"m")
    sealed.ciphertext.unlink()
    out = tmp_path / "out"
    error = rejected("io_error", out, lambda: open_as(sealed, receiver, out))
    assert error.run_id == RUN
    assert error.hop == 0


# Sealing arguments and the error type --------------------------------------------------


def test_seal_rejects_bad_arguments(tmp_path: Path, sender: Party, receiver: Party) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        seal(tmp_path, sender, [receiver], b"", chunk_size=MIN_CHUNK_SIZE - 1)
    with pytest.raises(ValueError, match="chunk_size"):
        seal(tmp_path, sender, [receiver], b"", chunk_size=MAX_CHUNK_SIZE + 1)
    with pytest.raises(ValueError, match=r"include ctx\.recipient"):
        seal_file(
            tmp_path / "hop.plain",
            tmp_path / "x",
            ctx=HopContext(
                run_id=RUN,
                hop_index=0,
                sender=sender.spiffe_id,
                recipient=receiver.spiffe_id,
                previous_manifest_hash=GENESIS,
                plan_hash=PLAN,
                schema_hash=SCHEMA,
            ),
            sender_key=sender.signing,
            recipients=[new_party("other").recipient()],
        )
    with pytest.raises(ValueError, match="plan_hash must be 64 lower-case hex digits"):
        HopContext(
            run_id=RUN,
            hop_index=0,
            sender=sender.spiffe_id,
            recipient=receiver.spiffe_id,
            previous_manifest_hash=GENESIS,
            plan_hash=PLAN.upper(),
            schema_hash=SCHEMA,
        )


def test_seal_reports_a_missing_plaintext(tmp_path: Path, sender: Party, receiver: Party) -> None:
    ctx = HopContext(
        run_id=RUN,
        hop_index=0,
        sender=sender.spiffe_id,
        recipient=receiver.spiffe_id,
        previous_manifest_hash=GENESIS,
        plan_hash=PLAN,
        schema_hash=SCHEMA,
    )
    with pytest.raises(SealError) as caught:
        seal_file(
            tmp_path / "missing",
            tmp_path / "sealed",
            ctx=ctx,
            sender_key=sender.signing,
            recipients=[receiver.recipient()],
        )
    assert caught.value.reason == "io_error"
    assert list(tmp_path.iterdir()) == []


def test_every_reason_is_documented() -> None:
    assert len(set(REASONS)) == len(REASONS) == 18
    doc = SealError.__doc__ or ""
    for reason in REASONS:
        assert f"``{reason}``" in doc, reason
    error = SealError("replay", "seen", run_id=RUN, hop=2)
    assert isinstance(error, BatonError)
    assert (error.reason, error.run_id, error.hop) == ("replay", RUN, 2)
    assert str(error) == "replay: seen"


# Replay guards: one contract, every implementation -------------------------------------


class ReplayGuardContract:
    """The behaviour every ReplayGuard must show; subclassed per implementation."""

    @pytest.fixture
    def guard(self, tmp_path: Path) -> ReplayGuard:
        raise NotImplementedError

    def test_a_new_hop_is_fresh(self, guard: ReplayGuard) -> None:
        assert guard.check("r", 0, "a") == "fresh"
        assert guard.accept("r", 0, "a") == "fresh"
        assert guard.accept("r", 1, "b") == "fresh"
        assert guard.accept("r", 7, "c") == "fresh"

    def test_the_same_hop_again_is_a_replay(self, guard: ReplayGuard) -> None:
        guard.accept("r", 3, "a")
        assert guard.check("r", 3, "a") == "replay"
        assert guard.accept("r", 3, "a") == "replay"

    def test_another_manifest_for_an_accepted_hop_is_equivocation(self, guard: ReplayGuard) -> None:
        guard.accept("r", 3, "a")
        assert guard.check("r", 3, "b") == "equivocation"
        assert guard.accept("r", 3, "b") == "equivocation"
        assert guard.check("r", 3, "a") == "replay"

    def test_an_earlier_hop_after_a_later_one_is_a_rollback(self, guard: ReplayGuard) -> None:
        guard.accept("r", 5, "a")
        assert guard.check("r", 4, "b") == "rollback"
        assert guard.accept("r", 4, "b") == "rollback"
        assert guard.check("r", 6, "c") == "fresh"

    def test_runs_are_independent(self, guard: ReplayGuard) -> None:
        guard.accept("r", 5, "a")
        assert guard.check("s", 5, "a") == "fresh"
        assert guard.check("s", 1, "b") == "fresh"

    def test_check_records_nothing(self, guard: ReplayGuard) -> None:
        assert guard.check("r", 5, "a") == "fresh"
        assert guard.check("r", 1, "b") == "fresh"
        assert guard.accept("r", 1, "b") == "fresh"


class TestMemoryReplayGuard(ReplayGuardContract):
    @pytest.fixture
    def guard(self, tmp_path: Path) -> ReplayGuard:
        return MemoryReplayGuard()


class TestSqliteReplayGuard(ReplayGuardContract):
    @pytest.fixture
    def guard(self, tmp_path: Path) -> ReplayGuard:
        return SqliteReplayGuard(tmp_path / "replay.db")

    def test_state_survives_a_restart(self, tmp_path: Path) -> None:
        path = tmp_path / "replay.db"
        SqliteReplayGuard(path).accept("r", 5, "a")
        again = SqliteReplayGuard(path)
        assert again.check("r", 5, "a") == "replay"
        assert again.check("r", 5, "b") == "equivocation"
        assert again.check("r", 4, "c") == "rollback"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_corrupt_replay_database_is_an_os_error(tmp_path: Path) -> None:
    path = tmp_path / "replay.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(OSError, match=r"replay database .*replay\.db"):
        SqliteReplayGuard(path)


class _BrokenGuard(MemoryReplayGuard):
    def accept(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        raise OSError("disk full")


def test_a_failing_guard_is_a_local_io_error(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    sealed = seal(tmp_path, sender, [receiver], b"model")
    out = tmp_path / "out"
    out.write_bytes(b"previous model")
    with pytest.raises(SealError) as caught:
        open_as(sealed, receiver, out, guard=_BrokenGuard())
    assert caught.value.reason == "io_error"
    assert "disk full" in str(caught.value)
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hop.plain", "hop.sealed", "out"]


class _RacingGuard(MemoryReplayGuard):
    """A guard whose early check misses a concurrent accept (as in a race)."""

    def check(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        return "fresh"


def test_a_race_is_settled_by_the_atomic_accept(
    tmp_path: Path, sender: Party, receiver: Party
) -> None:
    one = seal(tmp_path, sender, [receiver], b"model one", hop=1, name="one")
    two = seal(tmp_path, sender, [receiver], b"model two", hop=1, name="two")
    guard, out = _RacingGuard(), tmp_path / "model"
    open_as(one, receiver, out, guard=guard)
    with pytest.raises(SealError) as caught:
        open_as(two, receiver, out, guard=guard)
    assert caught.value.reason == "equivocation"
    assert out.read_bytes() == b"model one"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
