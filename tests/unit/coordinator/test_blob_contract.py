"""The ``BlobStore`` contract, checked against every implementation (file and memory)."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import threading
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from baton.domain import BlobRef
from baton.errors import BlobError, NotFoundError
from coordinator.blobs import BlobStore, FileBlobStore, MemoryBlobStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

DATA = bytes(range(256)) * 40 + b"tail"
SHA = hashlib.sha256(DATA).hexdigest()
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
BAD_TRANSFER_IDS = ["", ".", "..", "a/b", "../up", "a b", "é", "x\n", "x" * 129, "a\\b"]
BAD_BLOB_IDS = ["", SHA.upper(), SHA[:63], SHA + "0", "g" * 64, "../" * 21 + "a"]


def _upload(blobs: BlobStore, transfer_id: str, data: bytes, chunk: int = 1000) -> int:
    committed = 0
    for start in range(0, len(data), chunk):
        committed = blobs.append(transfer_id, start, data[start : start + chunk])
    return committed


class BlobContract:
    """Every ``BlobStore`` implementation passes these; subclasses say how to build one."""

    def make_blobs(self, tmp_path: Path) -> BlobStore:
        """Returns a new, empty blob store."""
        raise NotImplementedError

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return self.make_blobs(tmp_path)

    def test_upload_finish_read_round_trip(self, blobs: BlobStore) -> None:
        assert blobs.committed("t-1") == 0
        assert blobs.append("t-1", 0, DATA[:3000]) == 3000
        assert blobs.committed("t-1") == 3000
        assert blobs.append("t-1", 3000, DATA[3000:]) == len(DATA)
        assert not blobs.exists(SHA)
        ref = blobs.finish("t-1", expected_sha256=SHA, expected_size=len(DATA))
        assert ref == BlobRef(blob_id=SHA, size=len(DATA))
        assert blobs.exists(SHA)
        assert blobs.size(SHA) == len(DATA)
        assert b"".join(blobs.read(SHA)) == DATA
        assert blobs.committed("t-1") == 0  # the upload is closed; its id may be reused

    def test_finished_reports_only_successful_uploads(self, blobs: BlobStore) -> None:
        assert blobs.finished("t-ok") is None
        _upload(blobs, "t-ok", DATA)
        assert blobs.finished("t-ok") is None  # still open
        ref = blobs.finish("t-ok", expected_sha256=SHA, expected_size=len(DATA))
        assert blobs.finished("t-ok") == ref
        _upload(blobs, "t-bad", DATA)
        with pytest.raises(BlobError):
            blobs.finish("t-bad", expected_sha256=EMPTY_SHA, expected_size=len(DATA))
        assert blobs.finished("t-bad") is None
        with pytest.raises(BlobError):
            blobs.finished("../up")

    def test_empty_appends_and_empty_blobs(self, blobs: BlobStore) -> None:
        assert blobs.append("t", 0, b"") == 0
        assert blobs.finish("t", expected_sha256=EMPTY_SHA, expected_size=0) == BlobRef(
            blob_id=EMPTY_SHA, size=0
        )
        # An upload never appended to is the empty blob too.
        assert blobs.finish("never", expected_sha256=EMPTY_SHA, expected_size=0).size == 0
        assert list(blobs.read(EMPTY_SHA)) == []

    @pytest.mark.parametrize("offset", [0, 999, 1001, 5000, -1])
    def test_append_at_the_wrong_offset_names_both(self, blobs: BlobStore, offset: int) -> None:
        blobs.append("t", 0, DATA[:1000])
        with pytest.raises(BlobError) as info:
            blobs.append("t", offset, b"xyz")
        assert str(offset) in str(info.value)
        assert "1000" in str(info.value)
        assert blobs.committed("t") == 1000
        blobs.append("t", 1000, DATA[1000:])
        assert blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA)).blob_id == SHA

    def test_wrong_size_discards_the_upload(self, blobs: BlobStore) -> None:
        _upload(blobs, "t", DATA)
        with pytest.raises(BlobError, match=f"{len(DATA)} bytes, expected {len(DATA) + 1}"):
            blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA) + 1)
        assert blobs.committed("t") == 0
        assert not blobs.exists(SHA)

    def test_wrong_hash_discards_the_upload(self, blobs: BlobStore) -> None:
        corrupt = DATA[:-1] + b"X"
        _upload(blobs, "t", corrupt)
        with pytest.raises(BlobError, match="SHA-256") as info:
            blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA))
        assert hashlib.sha256(corrupt).hexdigest() in str(info.value)
        assert blobs.committed("t") == 0
        assert not blobs.exists(SHA)
        assert not blobs.exists(hashlib.sha256(corrupt).hexdigest())

    @pytest.mark.parametrize("bad", BAD_BLOB_IDS)
    def test_malformed_expected_hash_keeps_the_upload(self, blobs: BlobStore, bad: str) -> None:
        _upload(blobs, "t", DATA)
        with pytest.raises(BlobError):
            blobs.finish("t", expected_sha256=bad, expected_size=len(DATA))
        assert blobs.committed("t") == len(DATA)

    def test_identical_uploads_are_deduplicated(self, blobs: BlobStore) -> None:
        _upload(blobs, "first", DATA)
        _upload(blobs, "second", DATA, chunk=777)
        one = blobs.finish("first", expected_sha256=SHA, expected_size=len(DATA))
        two = blobs.finish("second", expected_sha256=SHA, expected_size=len(DATA))
        assert one == two == BlobRef(blob_id=SHA, size=len(DATA))
        assert (blobs.committed("first"), blobs.committed("second")) == (0, 0)
        assert b"".join(blobs.read(SHA)) == DATA

    def test_abort_discards_and_is_idempotent(self, blobs: BlobStore) -> None:
        _upload(blobs, "t", DATA[:2000])
        blobs.abort("t")
        assert blobs.committed("t") == 0
        blobs.abort("t")
        blobs.abort("never-opened")
        assert blobs.append("t", 0, b"new") == 3

    @pytest.mark.parametrize("bad", BAD_TRANSFER_IDS)
    def test_malformed_transfer_ids_are_refused(self, blobs: BlobStore, bad: str) -> None:
        with pytest.raises(BlobError):
            blobs.committed(bad)
        with pytest.raises(BlobError):
            blobs.append(bad, 0, b"x")
        with pytest.raises(BlobError):
            blobs.finish(bad, expected_sha256=EMPTY_SHA, expected_size=0)
        with pytest.raises(BlobError):
            blobs.abort(bad)

    @pytest.mark.parametrize("good", ["x" * 128, "Site-1.run_2.hop-3", "-", "..."])
    def test_well_formed_transfer_ids_work(self, blobs: BlobStore, good: str) -> None:
        assert blobs.append(good, 0, b"abc") == 3
        assert blobs.committed(good) == 3

    @pytest.mark.parametrize("bad", BAD_BLOB_IDS)
    def test_malformed_blob_ids_are_refused(self, blobs: BlobStore, bad: str) -> None:
        with pytest.raises(BlobError):
            blobs.exists(bad)
        with pytest.raises(BlobError):
            blobs.size(bad)
        with pytest.raises(BlobError):
            blobs.read(bad)

    def test_absent_blobs_are_not_found_eagerly(self, blobs: BlobStore) -> None:
        assert not blobs.exists(SHA)
        with pytest.raises(NotFoundError):
            blobs.size(SHA)
        with pytest.raises(NotFoundError):
            blobs.read(SHA)  # raised by the call, before any chunk is asked for

    @pytest.mark.parametrize(
        ("offset", "chunk_size"), [(0, 1), (0, 3), (0, 1 << 20), (4, 3), (len(DATA) - 1, 7)]
    )
    def test_read_streams_bounded_chunks_from_an_offset(
        self, blobs: BlobStore, offset: int, chunk_size: int
    ) -> None:
        _upload(blobs, "t", DATA)
        blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA))
        chunks = list(blobs.read(SHA, offset=offset, chunk_size=chunk_size))
        assert b"".join(chunks) == DATA[offset:]
        assert all(0 < len(c) <= chunk_size for c in chunks)

    def test_read_at_the_end_is_empty_and_beyond_is_refused(self, blobs: BlobStore) -> None:
        _upload(blobs, "t", DATA)
        blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA))
        assert list(blobs.read(SHA, offset=len(DATA))) == []
        with pytest.raises(BlobError, match=str(len(DATA) + 1)):
            blobs.read(SHA, offset=len(DATA) + 1)
        with pytest.raises(BlobError):
            blobs.read(SHA, offset=-1)
        with pytest.raises(BlobError):
            blobs.read(SHA, chunk_size=0)

    def test_parallel_uploads_stay_separate(self, blobs: BlobStore) -> None:
        payloads = {f"t{i}": random.Random(i).randbytes(20_000 + i) for i in range(8)}

        def work(transfer_id: str) -> None:
            _upload(blobs, transfer_id, payloads[transfer_id], chunk=512)

        pool = [threading.Thread(target=work, args=(t,)) for t in payloads]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        for transfer_id, data in payloads.items():
            digest = hashlib.sha256(data).hexdigest()
            ref = blobs.finish(transfer_id, expected_sha256=digest, expected_size=len(data))
            assert b"".join(blobs.read(ref.blob_id)) == data

    def test_racing_appends_at_one_offset_let_exactly_one_win(self, blobs: BlobStore) -> None:
        blobs.append("t", 0, b"head")
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def work(i: int) -> None:
            barrier.wait()
            try:
                blobs.append("t", 4, bytes([i]) * 100)
                outcomes.append("won")
            except BlobError:
                outcomes.append("refused")

        pool = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert sorted(outcomes) == ["refused"] * 7 + ["won"]
        assert blobs.committed("t") == 104


class TestMemoryBlobStore(BlobContract):
    """The contract on ``MemoryBlobStore``."""

    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return MemoryBlobStore()


class TestFileBlobStore(BlobContract):
    """The contract on ``FileBlobStore``, plus what only files can show."""

    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return FileBlobStore(tmp_path / "blobs")

    def test_uploads_and_blobs_survive_a_restart(self, tmp_path: Path) -> None:
        root = tmp_path / "blobs"
        before = FileBlobStore(root)
        _upload(before, "done", DATA)
        before.finish("done", expected_sha256=SHA, expected_size=len(DATA))
        before.append("open", 0, DATA[:1500])
        after = FileBlobStore(root)
        assert after.committed("open") == 1500
        assert after.append("open", 1500, DATA[1500:]) == len(DATA)
        assert b"".join(after.read(SHA)) == DATA
        assert after.finish("open", expected_sha256=SHA, expected_size=len(DATA)).blob_id == SHA
        # A restarted store still knows which uploads finished, and into what.
        assert after.finished("done") == BlobRef(blob_id=SHA, size=len(DATA))

    def test_layout_and_permissions(self, tmp_path: Path) -> None:
        root = tmp_path / "deep" / "blobs"
        blobs = FileBlobStore(root)
        blobs.append("open", 0, b"partial")
        _upload(blobs, "t", DATA)
        blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA))
        blob_file = root / "sha256" / SHA[:2] / SHA
        assert blob_file.read_bytes() == DATA
        assert sorted(p.name for p in (root / "partial").iterdir()) == ["open"]
        assert stat.S_IMODE((root / "done" / "t").stat().st_mode) == 0o600
        for directory in (root, root / "partial", root / "done", root / "sha256", blob_file.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for path in (blob_file, root / "partial" / "open"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    def test_a_root_that_is_a_file_is_refused(self, tmp_path: Path) -> None:
        root = tmp_path / "blobs"
        root.write_text("not a directory")
        with pytest.raises(BlobError, match="not a directory"):
            FileBlobStore(root)

    def test_an_abandoned_read_closes_its_file(self, tmp_path: Path) -> None:
        blobs = FileBlobStore(tmp_path / "blobs")
        _upload(blobs, "t", DATA)
        blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA))
        open_fds = len(os.listdir("/proc/self/fd"))
        stream = blobs.read(SHA, chunk_size=10)
        assert next(stream) == DATA[:10]
        assert len(os.listdir("/proc/self/fd")) == open_fds + 1
        stream.close()  # what dropping it does, deterministically
        assert len(os.listdir("/proc/self/fd")) == open_fds

    def test_a_70_mib_blob_streams_through_bounded_memory(self, tmp_path: Path) -> None:
        mib, chunks = 1 << 20, 70
        blobs = FileBlobStore(tmp_path / "blobs")
        digest = hashlib.sha256()
        tracemalloc.start()
        try:
            for i, chunk in enumerate(_payload(chunks)):
                digest.update(chunk)
                assert blobs.append("big", i * mib, chunk) == (i + 1) * mib
            ref = blobs.finish("big", expected_sha256=digest.hexdigest(), expected_size=70 * mib)
            read_chunk = 1_000_003  # not a divisor of the blob, nor of the write size
            expected = _Expected(_payload(chunks))
            total = 0
            for piece in blobs.read(ref.blob_id, chunk_size=read_chunk):
                assert 0 < len(piece) <= read_chunk
                assert piece == expected.take(len(piece)), f"differs after {total} bytes"
                total += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == ref.size == 70 * mib
        assert expected.take(1) == b""
        # A whole-blob copy anywhere would show as a peak of at least 70 MiB.
        assert peak < 8 * mib, f"peak traced memory {peak / mib:.1f} MiB"


def _payload(chunks: int) -> Iterator[bytes]:
    """A reproducible 1 MiB-per-chunk byte stream, generated chunk by chunk."""
    for i in range(chunks):
        yield random.Random(i).randbytes(1 << 20)


class _Expected:
    """Hands out the next ``n`` bytes of a chunked stream, holding one chunk at a time."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            if self._pos == len(self._current):
                self._current, self._pos = next(self._chunks, b""), 0
                if not self._current:
                    break
            part = self._current[self._pos : self._pos + n]
            self._pos += len(part)
            n -= len(part)
            parts.append(part)
        return b"".join(parts)
