"""Rotating buffers hashed by a worker thread: the whole stream's SHA-256 and each chunk's
own, in order, however far the caller runs ahead of the worker."""

from __future__ import annotations

import hashlib
import os

import pytest

from baton.security.streaming import HashedBuffers


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_chunk_and_the_whole_are_hashed_in_order(count: int) -> None:
    chunks = [os.urandom(n) for n in (4096, 4096, 17, 4096, 1, 4096, 3000, 4096, 4096, 5)]
    with HashedBuffers(4096, count, per_chunk=True) as hashed:
        for data in chunks:
            view = hashed.next(len(data))
            view[:] = data
            hashed.hash(view)
        digests, whole = hashed.chunk_digests(), hashed.hexdigest()
    assert digests == [hashlib.sha256(c).digest() for c in chunks]
    assert whole == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_without_per_chunk_only_the_whole_is_hashed() -> None:
    with HashedBuffers(8) as hashed:
        for data in (b"abc", b"defgh"):
            view = hashed.next(len(data))
            view[:] = data
            hashed.hash(view)
        assert hashed.chunk_digests() == []
        assert hashed.hexdigest() == hashlib.sha256(b"abcdefgh").hexdigest()
