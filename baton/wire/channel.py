"""Transport constants and helpers shared by every gRPC endpoint: limits, chunking, channels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import grpc

CHUNK_BYTES: Final = 1 << 20
"""Blob bytes per streamed message (1 MiB: the sweet spot measured for Python gRPC)."""
EVALUATION_STAGE: Final = "evaluation"
"""``ReportMetrics`` stage of a site's evaluation of a finished run's final model."""

MAX_MESSAGE_BYTES: Final = 4 * CHUNK_BYTES
"""Largest gRPC message either side accepts or sends; a blob chunk plus room for headers."""

GRPC_OPTIONS: Final[list[tuple[str, int]]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keep long-lived assignment streams alive through idle NATs and firewalls.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""Channel and server options: explicit message limits and keepalives."""

SERVER_OPTIONS: Final[list[tuple[str, int]]] = [
    *GRPC_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]
"""Server-only options: accept the clients' keepalive pings, and bind the port alone: with
gRPC's default SO_REUSEPORT a second server on the same port starts too, and clients are
spread over both, each with its own state and perhaps another CA."""


def secure_channel(
    target: str, credentials: grpc.ChannelCredentials, *, server_name: str | None = None
) -> grpc.Channel:
    """Opens a TLS channel with Baton's limits; ``server_name`` overrides the SAN checked."""
    options: list[tuple[str, int | str]] = list(GRPC_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def file_chunks(path: Path, *, offset: int = 0, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Streams a file's bytes from ``offset`` in chunks, never holding it whole."""
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(chunk_size):
            yield chunk


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    for chunk in file_chunks(path):
        h.update(chunk)
    return h.hexdigest()


def file_stamp(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten (empty if it is missing): a cheap
    test for reloading it."""
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
