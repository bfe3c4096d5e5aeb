"""The hop benchmark's baselines: raw TCP loopback, a plain gRPC relay (with and without
mTLS, 1 MiB chunks, no crypto, up then down), a cut-through relay over mTLS (the
coordinator's blob store and its cut-through reads: down while up), and ``cp``.

The relay server runs as its own process: ``python benchmarks/hop_baselines.py relay
ROOT PORT_FILE STORE tls|plain|cut``.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from hop_world import dial, tls_files

from baton.domain import BlobRef
from baton.security.tls import server_credentials
from baton.v1 import common_pb2
from baton.wire.channel import (
    CHUNK_BYTES,
    GRPC_OPTIONS,
    MAX_MESSAGE_BYTES,
    SERVER_OPTIONS,
    file_chunks,
)
from coordinator.blobs import FileBlobStore
from coordinator.blobs_follow import follow

_UP, _DOWN = "/bench.Relay/Up", "/bench.Relay/Down"


def tcp_copy(src: Path, dst: Path) -> float:
    """Seconds to send ``src`` over a loopback TCP connection into ``dst``."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def receive() -> None:
        conn, _ = server.accept()
        buf = bytearray(CHUNK_BYTES)
        with conn, dst.open("wb", buffering=0) as out:
            while n := conn.recv_into(buf):
                out.write(memoryview(buf)[:n])

    start = time.perf_counter()
    worker = threading.Thread(target=receive)
    worker.start()
    with socket.create_connection(("127.0.0.1", port)) as conn, src.open("rb") as f:
        conn.sendfile(f)
    worker.join()
    server.close()
    return time.perf_counter() - start


def cp_copy(src: Path, dst: Path) -> float:
    """Seconds ``cp`` takes to copy ``src`` to ``dst``."""
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    return time.perf_counter() - start


def relay_copy(
    root: Path, src: Path, dst: Path, *, tls: bool, cut: bool = False, chunk: int = CHUNK_BYTES
) -> float:
    """Seconds to upload ``src`` to a gRPC relay process and download it into ``dst``: up
    then down, or (``cut``, over mTLS) down while up, through the coordinator's blob store;
    ``chunk`` bytes per message both ways."""
    mode = "cut" if cut else "tls" if tls else "plain"
    port_file = root / f"relay-{mode}.port"
    port_file.unlink(missing_ok=True)
    store = root / f"relay-{mode}.blob"
    args = [sys.executable, __file__, "relay", str(root), str(port_file), str(store), mode]
    args.append(str(chunk))
    blob = f"{_sha256(src)} {src.stat().st_size}" if cut else ""
    proc = subprocess.Popen(args)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gRPC relay did not start")
            time.sleep(0.05)
        port = int(port_file.read_text())
        target = f"127.0.0.1:{port}"
        chan = (
            dial(root, "site-a", port, options=message_options(chunk))
            if tls or cut
            else grpc.insecure_channel(target, message_options(chunk))
        )
        with chan, futures.ThreadPoolExecutor(max_workers=1) as pool:
            up = chan.stream_unary(_UP, request_serializer=_ser, response_deserializer=_de)
            down = chan.unary_stream(_DOWN, request_serializer=_ser, response_deserializer=_de)
            start = time.perf_counter()
            chunks = (
                common_pb2.BlobChunk(data=d).SerializeToString()
                for d in file_chunks(src, chunk_size=chunk)
            )
            sending = pool.submit(up, chunks, metadata=(("x-blob", blob),))
            if not cut:
                sending.result()
            with dst.open("wb") as out:
                for msg in down(blob.encode()):
                    out.write(common_pb2.BlobChunk.FromString(msg).data)
            sending.result()
            return time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()
        if store.is_dir():
            shutil.rmtree(store)
        store.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    for data in file_chunks(path):
        sha.update(data)
    return sha.hexdigest()


def message_options(
    chunk: int, base: list[tuple[str, int]] = GRPC_OPTIONS
) -> list[tuple[str, int]]:
    """``base`` with message limits that let ``chunk``-byte blob messages through."""
    limit = max(MAX_MESSAGE_BYTES, chunk + (64 << 10))
    sized = {"grpc.max_receive_message_length", "grpc.max_send_message_length"}
    return [(k, v) for k, v in base if k not in sized] + [(k, limit) for k in sorted(sized)]


def _ser(b: bytes) -> bytes:
    return b


_de = _ser


def _serve(root: Path, port_file: Path, store: Path, mode: str, chunk: int) -> None:
    """The relay: Up writes the streamed chunks to ``store``; Down streams them back in
    ``chunk``-byte messages (in ``cut`` mode through a blob store, as they arrive)."""
    blobs = FileBlobStore(store) if mode == "cut" else None

    def up(requests: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
        if blobs is not None:
            sha, size = str(dict(ctx.invocation_metadata())["x-blob"]).split()
            committed = 0
            for msg in requests:
                committed = blobs.append("up", committed, common_pb2.BlobChunk.FromString(msg).data)
            blobs.finish("up", expected_sha256=sha, expected_size=int(size))
            return b""
        with store.open("wb") as f:
            for msg in requests:
                f.write(common_pb2.BlobChunk.FromString(msg).data)
        return b""

    def down(req: bytes, _ctx: grpc.ServicerContext) -> Iterator[bytes]:
        offset = 0
        if blobs is not None:
            sha, size = req.decode().split()
            ref = BlobRef(blob_id=sha, size=int(size))
            chunks = follow(blobs, "up", ref, offset=0, chunk_size=chunk, stall_seconds=30)
        else:
            chunks = file_chunks(store, chunk_size=chunk)
        for data in chunks:
            yield common_pb2.BlobChunk(offset=offset, data=data).SerializeToString()
            offset += len(data)

    handlers = {
        "Up": grpc.stream_unary_rpc_method_handler(up, _de, _ser),
        "Down": grpc.unary_stream_rpc_method_handler(down, _de, _ser),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=message_options(chunk, SERVER_OPTIONS)
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Relay", handlers)])
    if mode != "plain":
        creds = server_credentials(tls_files(root, "coordinator").load())
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    server.wait_for_termination()


if __name__ == "__main__":
    _, _, root_arg, port_arg, store_arg, mode_arg, chunk_arg = sys.argv
    _serve(Path(root_arg), Path(port_arg), Path(store_arg), mode_arg, int(chunk_arg))
