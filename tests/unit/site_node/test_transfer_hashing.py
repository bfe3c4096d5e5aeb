"""Downloads hash the bytes as they arrive, a resumed file's prefix included, and can be
read while they arrive."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from baton.domain import BlobRef
from baton.errors import BlobError, SealError
from baton.security.streaming import Tail, read_while_written
from baton.v1 import common_pb2, envelope_pb2, site_pb2, site_pb2_grpc
from site_node import transfer

DATA = os.urandom(3 * 1000 + 17)
BLOB = BlobRef(blob_id=hashlib.sha256(DATA).hexdigest(), size=len(DATA))


class _Relay:
    """Serves ``DATA`` from the requested offset in 1000-byte chunks, as the coordinator."""

    def DownloadBlob(
        self, request: site_pb2.DownloadBlobRequest, timeout: float
    ) -> Iterator[common_pb2.BlobChunk]:
        for start in range(request.offset, len(DATA), 1000):
            yield common_pb2.BlobChunk(offset=start, data=DATA[start : start + 1000])


def _download(dest: Path) -> None:
    stub = cast(site_pb2_grpc.SiteServiceStub, cast(Any, _Relay()))
    transfer.download(stub, run_id="r", hop_index=1, blob=BLOB, dest=dest)


def test_a_resumed_download_hashes_the_partial_file_and_completes_it(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"
    dest.write_bytes(DATA[:1234])
    _download(dest)
    assert dest.read_bytes() == DATA


def test_a_partial_file_with_wrong_bytes_is_caught_and_removed(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"
    dest.write_bytes(b"\0" * 1234)
    with pytest.raises(BlobError, match=r"^downloaded model does not match its content hash$"):
        _download(dest)
    assert not dest.exists()


def test_the_upload_hash_is_read_from_the_senders_manifest() -> None:
    sha = hashlib.sha256(b"sealed").hexdigest()
    inner = envelope_pb2.HopManifest(ciphertext_sha256=sha).SerializeToString()
    signed = envelope_pb2.SignedManifest(manifest=inner, signature=b"s").SerializeToString()
    assert transfer.sealed_sha256(signed) == sha
    assert transfer.sealed_sha256(b"\xff\xff not a manifest") is None
    no_hash = envelope_pb2.SignedManifest(manifest=b"").SerializeToString()
    assert transfer.sealed_sha256(no_hash) is None


def _read_all(tail: Tail) -> bytes:
    data = tail.read(tail.size + 1)
    if len(data) != tail.size:
        raise SealError("truncated", f"{len(data)} of {tail.size} bytes")
    return data


def test_a_resumed_download_is_read_from_its_start_while_it_arrives(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"
    dest.write_bytes(DATA[:1234])
    with Tail(dest, BLOB.size) as tail:
        assert read_while_written(tail, _fetcher(_Relay(), dest, BLOB), _read_all) == DATA


class _Dropping(_Relay):
    """Serves two chunks, then fails for good."""

    def DownloadBlob(
        self, request: site_pb2.DownloadBlobRequest, timeout: float
    ) -> Iterator[common_pb2.BlobChunk]:
        chunks = super().DownloadBlob(request, timeout)
        yield next(chunks)
        yield next(chunks)
        raise BlobError("the relay gave up")


def _fetcher(relay: _Relay, dest: Path, blob: BlobRef) -> Callable[[Tail], None]:
    stub = cast(site_pb2_grpc.SiteServiceStub, cast(Any, relay))

    def fetch(tail: Tail) -> None:
        transfer.download(stub, run_id="r", hop_index=1, blob=blob, dest=dest, progress=tail.grew)

    return fetch


def test_a_failed_download_is_reported_rather_than_the_short_read(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"
    with Tail(dest, BLOB.size) as tail, pytest.raises(BlobError, match=r"^the relay gave up$"):
        read_while_written(tail, _fetcher(_Dropping(), dest, BLOB), _read_all)


def test_bytes_that_miss_their_hash_fail_after_the_reader_saw_them(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"
    wrong = BlobRef(blob_id="0" * 64, size=BLOB.size)
    with (
        Tail(dest, BLOB.size) as tail,
        pytest.raises(BlobError, match=r"^downloaded model does not match its content hash$"),
    ):
        read_while_written(tail, _fetcher(_Relay(), dest, wrong), _read_all)
    assert not dest.exists()


def test_a_reader_that_fails_stops_the_download_with_its_own_error(tmp_path: Path) -> None:
    dest = tmp_path / "in.sealed"

    def read_part(tail: Tail) -> bytes:
        tail.read(1000)
        raise SealError("chunk_hash", "chunk 0 is not the signed one")

    with Tail(dest, BLOB.size) as tail, pytest.raises(SealError, match="chunk 0 is not the"):
        read_while_written(tail, _fetcher(_Relay(), dest, BLOB), read_part)


def test_a_writer_that_removes_its_file_is_the_cause_even_when_the_reader_fails_first(
    tmp_path: Path,
) -> None:
    """The writer reports every byte, then removes the file for failing its hash; the
    reader, scheduled first, finds no file. The writer's error is the one raised."""
    dest = tmp_path / "in.sealed"
    reader_failed = threading.Event()

    def write(tail: Tail) -> None:
        dest.write_bytes(b"x" * 10)
        tail.grew(10)
        dest.unlink()
        reader_failed.wait(5)  # the reader fails before this writer raises
        raise BlobError("downloaded model does not match its content hash")

    def read(tail: Tail) -> bytes:
        try:
            return tail.read(10)
        finally:
            reader_failed.set()

    with Tail(dest, 10) as tail, pytest.raises(BlobError, match="does not match its content"):
        read_while_written(tail, write, read)
