"""Cut-through reads: an upload's bytes streamed on while they arrive, the last byte only
from the verified blob, and a cut link on either side resumed bit-identical."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from baton.domain import BlobRef
from baton.errors import BlobError, ConflictError, TransportError
from coordinator.blobs import BlobStore, FileBlobStore, MemoryBlobStore
from coordinator.blobs_follow import follow
from coordinator.engine.cutthrough import CutThrough
from coordinator.engine.transfers import Transfers, UploadHeader, transfer_key

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DATA = bytes(range(251)) * 97
REF = BlobRef(blob_id=hashlib.sha256(DATA).hexdigest(), size=len(DATA))


def _collect(stream: Iterator[bytes], into: bytearray) -> None:
    for data in stream:
        into += data


def _wait_for(check: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class FollowContract:
    """What every ``BlobStore`` does for readers of a growing upload."""

    def make_blobs(self, tmp_path: Path) -> BlobStore:
        raise NotImplementedError

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return self.make_blobs(tmp_path)

    def test_arrived_and_read_partial_track_an_open_upload(self, blobs: BlobStore) -> None:
        assert blobs.arrived("t") is None
        assert list(blobs.read_partial("t", offset=0, end=0)) == []
        blobs.append("t", 0, DATA[:5000])
        assert blobs.arrived("t") == 5000
        got = list(blobs.read_partial("t", offset=100, end=4100, chunk_size=1000))
        assert [len(c) for c in got] == [1000] * 4
        assert b"".join(got) == DATA[100:4100]
        blobs.append("t", 5000, DATA[5000:])
        blobs.finish("t", expected_sha256=REF.blob_id, expected_size=REF.size)
        assert blobs.arrived("t") is None
        assert list(blobs.read_partial("t", offset=0, end=10)) == []
        blobs.append("u", 0, b"abc")
        blobs.abort("u")
        assert blobs.arrived("u") is None

    def test_bad_partial_reads_are_refused(self, blobs: BlobStore) -> None:
        with pytest.raises(BlobError):
            blobs.arrived("../up")
        with pytest.raises(BlobError, match="outside"):
            blobs.read_partial("t", offset=11, end=10)
        with pytest.raises(BlobError, match="chunk size"):
            blobs.read_partial("t", offset=0, end=10, chunk_size=0)

    def test_a_follower_gets_all_but_the_last_byte_until_the_blob_is_verified(
        self, blobs: BlobStore
    ) -> None:
        got = bytearray()
        stream = follow(blobs, "t", REF, offset=0, chunk_size=4096, stall_seconds=10)
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(_collect, stream, got)
            for start in range(0, len(DATA), 3000):
                blobs.append("t", start, DATA[start : start + 3000])
            _wait_for(lambda: len(got) == len(DATA) - 1)
            time.sleep(0.05)
            assert len(got) == len(DATA) - 1
            assert not reading.done()
            blobs.finish("t", expected_sha256=REF.blob_id, expected_size=REF.size)
            reading.result(timeout=5)
        assert bytes(got) == DATA

    def test_a_discarded_upload_never_completes_its_followers(self, blobs: BlobStore) -> None:
        bad = DATA[:-1] + b"X"
        blobs.append("t", 0, bad)
        got = bytearray()
        stream = follow(blobs, "t", REF, offset=0, chunk_size=4096, stall_seconds=0.2)
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(_collect, stream, got)
            _wait_for(lambda: len(got) == len(DATA) - 1)
            with pytest.raises(BlobError):
                blobs.finish("t", expected_sha256=REF.blob_id, expected_size=REF.size)
            with pytest.raises(
                TransportError, match=f"nothing for 0.2 s after byte {len(bad) - 1}"
            ):
                reading.result(timeout=5)
        assert bytes(got) == bad[:-1]  # never the whole (wrong) blob

    def test_a_stream_from_a_stored_blob_or_an_offset(self, blobs: BlobStore) -> None:
        with pytest.raises(BlobError, match="outside"):
            follow(blobs, "t", REF, offset=REF.size + 1, chunk_size=10, stall_seconds=1)
        blobs.append("t", 0, DATA)
        blobs.finish("t", expected_sha256=REF.blob_id, expected_size=REF.size)
        stream = follow(blobs, "t", REF, offset=1234, chunk_size=999, stall_seconds=1)
        assert b"".join(stream) == DATA[1234:]


class TestMemoryFollow(FollowContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return MemoryBlobStore()


class TestFileFollow(FollowContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return FileBlobStore(tmp_path / "blobs")


class _Clocks:
    def touch(self, *args: object) -> None:
        pass


class _Scheduler:
    """Lets every site hold every hop: this test is about the bytes, not the schedule."""

    clocks = _Clocks()
    cut_through = CutThrough(None, None)  # type: ignore[arg-type]  # off: announces nothing

    def hop_for_site(self, *args: object) -> None:
        pass


def _transfers(blobs: BlobStore, *, stall_seconds: float) -> Transfers:
    return Transfers(
        None,  # type: ignore[arg-type]
        blobs,
        _Scheduler(),  # type: ignore[arg-type]
        max_blob_bytes=1 << 20,
        stall_seconds=stall_seconds,
    )


def _header(transfer_id: str, *, offset: int = 0, manifest: bytes = b"") -> UploadHeader:
    return UploadHeader(
        run_id="r", hop_index=0, transfer_id=transfer_id, total_size=REF.size,
        sha256=REF.blob_id, offset=offset, manifest=manifest,
    )  # fmt: skip


def _chunks(start: int, stop: int, cut_at: int | None = None) -> Iterator[tuple[int, bytes]]:
    for offset in range(start, stop, 1000):
        if cut_at is not None and offset >= cut_at:
            raise TransportError("the upload stream was cancelled by the client")
        yield offset, DATA[offset : min(offset + 1000, stop)]
        time.sleep(0.001)


def test_cut_links_on_both_sides_of_a_cut_through_hop_resume_bit_identical(
    tmp_path: Path,
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    transfers = _transfers(blobs, stall_seconds=10)
    header = _header("x1", manifest=b"signed manifest")
    got = bytearray()
    first_cut = threading.Event()

    def receive() -> None:
        # The recipient's first stream is cut after 6000 bytes; it resumes from its offset.
        stream = transfers.send(REF, offset=0, chunk_size=1500)
        for data in stream:
            got.extend(data)
            if len(got) >= 6000:
                stream.close()  # type: ignore[attr-defined]
                break
        first_cut.set()
        _collect(transfers.send(REF, offset=len(got), chunk_size=1500), got)

    def send() -> BlobRef:
        # The sender's link is cut at byte 12000; it resumes once the recipient has read
        # (and cut its own link) meanwhile, from what the coordinator committed.
        with pytest.raises(TransportError):
            transfers.upload("a", header, _chunks(0, REF.size, cut_at=12000))
        assert first_cut.wait(5)
        committed = blobs.committed(transfer_key("a", "x1"))
        assert committed == 12000
        assert transfers.announced("r", 0) == (REF, b"signed manifest")
        resumed = _header("x1", offset=committed, manifest=b"signed manifest")
        return transfers.upload("a", resumed, _chunks(committed, REF.size))

    with ThreadPoolExecutor(2) as pool:
        sending = pool.submit(send)
        _wait_for(lambda: transfers.arriving(REF))
        receiving = pool.submit(receive)
        assert sending.result(timeout=10) == REF
        receiving.result(timeout=10)
    assert bytes(got) == DATA
    assert not transfers.arriving(REF)
    assert transfers.announced("r", 0) is None
    assert b"".join(transfers.send(REF, offset=0, chunk_size=4096)) == DATA


def test_an_upload_ending_early_stays_readable_and_resumable(tmp_path: Path) -> None:
    transfers = _transfers(MemoryBlobStore(), stall_seconds=0.1)
    with pytest.raises(ConflictError, match="resume at offset 3000"):
        transfers.upload("a", _header("x"), _chunks(0, 3000))
    assert transfers.arriving(REF)
    assert transfers.announced("r", 0) is None  # sent without a manifest
    got = bytearray()
    with pytest.raises(TransportError, match="after byte 3000; resume later"):
        _collect(transfers.send(REF, offset=0, chunk_size=1000), got)
    assert bytes(got) == DATA[:3000]
