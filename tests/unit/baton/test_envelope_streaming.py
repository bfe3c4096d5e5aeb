"""A sealed hop opened while it is still arriving: same bytes, same checks, same errors."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING

import pytest

from baton.errors import BlobError, SealError
from baton.security.streaming import HashedBuffers, Tail
from tests.unit.baton.test_envelope import CHUNK, new_party, open_as, seal

if TYPE_CHECKING:
    from pathlib import Path


def _arrive(
    tail: Tail, blob: bytes, *, pieces: int = 7, until: int | None = None, checked: bool = False
) -> None:
    """Appends ``blob`` (up to ``until``) to ``tail``'s file in pieces, reporting each;
    ``checked``: ends as a writer that checked the file against the tail's hash."""
    stop = len(blob) if until is None else until
    step = max(1, stop // pieces)
    with tail.path.open("ab") as f:
        for start in range(0, stop, step):
            f.write(blob[start : min(stop, start + step)])
            f.flush()
            tail.grew(min(stop, start + step))
    tail.end(completed=checked)


def _writer(
    tail: Tail, blob: bytes, **kw: int | bool
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _arrive(tail, blob, **kw)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the test
            errors.append(exc)
            tail.end()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_a_blob_opened_while_it_arrives_gives_the_sealed_bytes(tmp_path: Path) -> None:
    a, b = new_party("a"), new_party("b")
    data = os.urandom(5 * CHUNK + 123)
    sealed = seal(tmp_path, a, [b], data)
    blob = sealed.ciphertext.read_bytes()
    with Tail(tmp_path / "in.sealed", len(blob)) as tail:
        thread, errors = _writer(tail, blob)
        m = open_as(sealed, b, tmp_path / "out", ciphertext=tail)  # type: ignore[arg-type]
        thread.join()
    assert (tmp_path / "out").read_bytes() == data
    assert (tmp_path / "in.sealed").read_bytes() == blob
    assert errors == []
    assert m.plaintext_length == len(data)


def test_a_tampered_chunk_stops_the_transfer_and_leaves_no_plaintext(tmp_path: Path) -> None:
    a, b = new_party("a"), new_party("b")
    sealed = seal(tmp_path, a, [b], os.urandom(20 * CHUNK))
    blob = bytearray(sealed.ciphertext.read_bytes())
    blob[CHUNK + 40] ^= 1  # inside chunk 1
    with Tail(tmp_path / "in.sealed", len(blob)) as tail:
        thread, errors = _writer(tail, bytes(blob), pieces=40)
        with pytest.raises(SealError) as caught:
            open_as(sealed, b, tmp_path / "out", ciphertext=tail)  # type: ignore[arg-type]
        ended = tail.abandon()
        thread.join()
    assert caught.value.reason == "chunk_hash"
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    if not ended:  # the writer was still going: its next report stopped it
        assert [str(e) for e in errors] == [
            "the transfer was abandoned: its reader rejected the bytes"
        ]
        assert isinstance(errors[0], BlobError)


def test_a_transfer_that_stops_early_reads_as_truncated(tmp_path: Path) -> None:
    a, b = new_party("a"), new_party("b")
    sealed = seal(tmp_path, a, [b], os.urandom(4 * CHUNK))
    blob = sealed.ciphertext.read_bytes()
    with Tail(tmp_path / "in.sealed", len(blob)) as tail:
        thread, _ = _writer(tail, blob, until=2 * CHUNK)
        with pytest.raises(SealError) as caught:
            open_as(sealed, b, tmp_path / "out", ciphertext=tail)  # type: ignore[arg-type]
        thread.join()
    assert (caught.value.reason, str(caught.value.message)) == (
        "truncated",
        "truncated: the blob ends inside chunk 1",
    )
    assert not (tmp_path / "out").exists()


def _counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes :class:`HashedBuffers` feeds a whole-blob hash."""
    queued: list[int] = []
    original = HashedBuffers._update_whole

    def counted(self: HashedBuffers, view: memoryview) -> None:
        queued.append(len(view))
        original(self, view)

    monkeypatch.setattr(HashedBuffers, "_update_whole", counted)
    return queued


@pytest.mark.parametrize("named", [False, True])
def test_a_blob_its_writer_checked_is_not_hashed_whole_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    a, b = new_party("a"), new_party("b")
    data = os.urandom(5 * CHUNK + 123)
    sealed = seal(tmp_path, a, [b], data)
    blob = sealed.ciphertext.read_bytes()
    queued = _counting_hashes(monkeypatch)
    sha256 = hashlib.sha256(blob).hexdigest() if named else None
    with Tail(tmp_path / "in.sealed", len(blob), sha256=sha256) as tail:
        thread, errors = _writer(tail, blob, checked=True)
        open_as(sealed, b, tmp_path / "out", ciphertext=tail)  # type: ignore[arg-type]
        thread.join()
    assert (tmp_path / "out").read_bytes() == data
    assert errors == []
    assert sum(queued) == (0 if named else len(blob))  # named: the writer's hash stands


@pytest.mark.parametrize(
    ("sha256", "checked"),
    [("0" * 64, True), (None, False)],
    ids=["writer checked another hash", "writer ended unchecked"],
)
def test_a_blob_not_checked_against_the_signed_hash_is_refused(
    tmp_path: Path, sha256: str | None, checked: bool
) -> None:
    a, b = new_party("a"), new_party("b")
    sealed = seal(tmp_path, a, [b], os.urandom(3 * CHUNK))
    blob = sealed.ciphertext.read_bytes()
    named = sha256 or hashlib.sha256(blob).hexdigest()
    with Tail(tmp_path / "in.sealed", len(blob), sha256=named) as tail:
        thread, _ = _writer(tail, blob, checked=checked)
        with pytest.raises(SealError) as caught:
            open_as(sealed, b, tmp_path / "out", ciphertext=tail)  # type: ignore[arg-type]
        thread.join()
    assert caught.value.reason == "ciphertext_hash"
    assert not (tmp_path / "out").exists()
