"""Downloads hash the bytes as they arrive, a resumed file's prefix included."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from baton.domain import BlobRef
from baton.errors import BlobError
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
