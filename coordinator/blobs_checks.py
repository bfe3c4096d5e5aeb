"""Names, bounds and directories shared by the blob stores (:mod:`coordinator.blobs`)."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, BinaryIO

from baton.errors import BlobError

if TYPE_CHECKING:
    from pathlib import Path

_TRANSFER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 1 << 20


def check_transfer_id(transfer_id: str) -> str:
    if not _TRANSFER_ID.fullmatch(transfer_id) or transfer_id in (".", ".."):
        raise BlobError(
            f"invalid transfer id {transfer_id[:140]!r}: use 1-128 of A-Z a-z 0-9 . _ -"
        )
    return transfer_id


def check_blob_id(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise BlobError(f"invalid blob id {blob_id[:80]!r}: expected 64 lower-case hex digits")
    return blob_id


def check_read(offset: int, chunk_size: int, size: int) -> None:
    if chunk_size < 1:
        raise BlobError(f"chunk size must be at least 1, not {chunk_size}")
    if not 0 <= offset <= size:
        raise BlobError(f"read offset {offset} is outside the blob's {size} bytes")


def hash_stream(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def make_private_dir(path: Path, *, parents: bool = False) -> None:
    try:
        path.mkdir(mode=0o700, parents=parents)
    except FileExistsError:
        if not path.is_dir():
            raise BlobError(f"{path}: exists and is not a directory") from None
        return
    except OSError as exc:
        raise BlobError(f"{path}: cannot create blob directory ({exc.strerror})") from exc
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
