"""Checks of the coordinator's stored copy of a sealed hop against its content address."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from baton.domain import BlobRef
from baton.errors import BlobError, NotFoundError
from coordinator.blobs import BlobStore

_CHUNK = 1 << 20


def copy_problem(
    blobs: BlobStore, ref: BlobRef, *, pace: Callable[[int], None] | None = None
) -> str | None:
    """What is wrong with the stored copy of ``ref``, as words that follow "the copy", or
    None if its length and SHA-256 are the ones its reference names.

    Reads the whole blob (a disk read of its size); call it outside the journal's lock.
    ``pace``, if given, is called with each chunk's length after it is read (a background
    check sleeps in it to bound its reading rate).
    """
    try:
        if not blobs.exists(ref.blob_id):
            return "is missing"
        size = blobs.size(ref.blob_id)
        if size != ref.size:
            return f"has {size} bytes, not {ref.size}"
        digest = hashlib.sha256()
        for chunk in blobs.read(ref.blob_id, chunk_size=_CHUNK):
            digest.update(chunk)
            if pace is not None:
                pace(len(chunk))
    except NotFoundError:
        return "is missing"
    except BlobError as exc:
        return f"cannot be read ({exc.message})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if digest.hexdigest() != ref.blob_id:
        return "fails its SHA-256 check"
    return None
