"""The file blob store reports file system failures as ``BlobError`` naming the path."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from baton.errors import BlobError
from coordinator.blobs import FileBlobStore

DATA = os.urandom(3000)
SHA = hashlib.sha256(DATA).hexdigest()


def _stored(root: Path) -> FileBlobStore:
    store = FileBlobStore(root)
    store.append("t", 0, DATA)
    store.finish("t", expected_sha256=SHA, expected_size=len(DATA))
    return store


def test_size_of_a_blob_whose_directory_is_a_file_is_a_blob_error(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    (tmp_path / "sha256" / SHA[:2]).write_bytes(b"not a directory")
    path = tmp_path / "sha256" / SHA[:2] / SHA
    with pytest.raises(BlobError, match=rf"^{re.escape(str(path))}: cannot read blob size \("):
        store.size(SHA)


def test_a_blob_removed_while_it_is_read_is_a_blob_error(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    chunks = store.read(SHA, chunk_size=1000)
    path = tmp_path / "sha256" / SHA[:2] / SHA
    path.unlink()
    with pytest.raises(BlobError, match=rf"^{re.escape(str(path))}: cannot read blob \("):
        next(chunks)


def test_an_unreadable_upload_record_is_a_blob_error(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    (tmp_path / "done" / "t").mkdir()
    with pytest.raises(BlobError, match=r"cannot read upload record \(Is a directory\)$"):
        store.finished("t")


def test_a_garbled_upload_record_reads_as_not_finished(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    assert store.finished("t") is not None
    (tmp_path / "done" / "t").write_text("../../etc 12\n", encoding="ascii")
    assert store.finished("t") is None


def test_an_upload_that_cannot_be_removed_is_a_blob_error(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    (tmp_path / "partial" / "t").mkdir()
    with pytest.raises(BlobError, match=r"partial/t: cannot discard upload \("):
        store.abort("t")
