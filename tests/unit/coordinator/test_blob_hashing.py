"""The file blob store hashes uploads as they arrive and syncs them at resume points."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from baton.errors import BlobError
from coordinator.blobs import FileBlobStore

DATA = os.urandom(5000)
SHA = hashlib.sha256(DATA).hexdigest()


def test_an_upload_resumed_after_a_restart_is_hashed_from_disk(tmp_path: Path) -> None:
    first = FileBlobStore(tmp_path)
    first.append("t", 0, DATA[:2000])
    second = FileBlobStore(tmp_path)  # a restart: the running hash is gone
    assert second.committed("t") == 2000
    second.append("t", 2000, DATA[2000:])
    ref = second.finish("t", expected_sha256=SHA, expected_size=len(DATA))
    assert (ref.blob_id, ref.size) == (SHA, len(DATA))
    assert b"".join(second.read(SHA)) == DATA


def test_bytes_changed_on_disk_before_a_restart_are_caught(tmp_path: Path) -> None:
    first = FileBlobStore(tmp_path)
    first.append("t", 0, DATA[:2000])
    [partial] = (tmp_path / "partial").iterdir()
    partial.write_bytes(b"x" * 2000)
    second = FileBlobStore(tmp_path)
    second.append("t", 2000, DATA[2000:])
    with pytest.raises(BlobError, match="upload discarded: SHA-256 "):
        second.finish("t", expected_sha256=SHA, expected_size=len(DATA))
    assert not second.exists(SHA)


def test_the_running_hash_starts_over_after_an_abort(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    blobs.append("t", 0, b"stale bytes")
    blobs.abort("t")
    blobs.append("t", 0, DATA)
    assert blobs.finish("t", expected_sha256=SHA, expected_size=len(DATA)).blob_id == SHA
