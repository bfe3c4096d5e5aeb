"""The load benchmark's simulated sites: one process per slice of sites, each running its
sites as coroutines of one event loop, so the client's own tail can be told from the
coordinator's by running more of them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from baton.v1 import site_pb2, site_pb2_grpc
from baton.wire.channel import GRPC_OPTIONS


@dataclass(frozen=True, kw_only=True, slots=True)
class Slice:
    """Sites ``first`` to ``last - 1`` of one client process, and when (Unix seconds) to
    start recording beats and to stop."""

    root: Path
    port: int
    first: int
    last: int
    interval: float
    record_from: float
    until: float


def channel(root: Path, name: str, port: int) -> grpc.aio.Channel:
    """An mTLS channel as ``name`` (``s<i>`` or ``ops``, the admin)."""
    folder = root / ("admin" if name == "ops" else name)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(root / "ca" / "ca.pem").read_bytes(),
        private_key=(folder / f"{name}.key").read_bytes(),
        certificate_chain=(folder / f"{name}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=list(GRPC_OPTIONS))


async def site_life(
    ch: grpc.aio.Channel, part: Slice, offset: float, lat: list[float], base: list[float] | None
) -> int:
    """Keeps one stream open and heartbeats every ``part.interval`` (first after
    ``offset`` s) until ``part.until``, recording the latency of the beats sent after
    ``part.record_from``; returns failed heartbeats (all of them). With ``base``, each beat
    is followed by a health check, the baseline: the same TLS, threads and machine, no
    lease work."""
    stub = site_pb2_grpc.SiteServiceStub(ch)
    health = health_pb2_grpc.HealthStub(ch)
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest())
    failed = 0
    await asyncio.sleep(offset)
    while time.time() < part.until:
        t = time.perf_counter()
        try:
            await stub.Heartbeat(site_pb2.HeartbeatRequest(), timeout=5)
            if time.time() >= part.record_from:
                lat.append(time.perf_counter() - t)
        except grpc.aio.AioRpcError:
            failed += 1
        if base is not None:
            t = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if time.time() >= part.record_from:
                base.append(time.perf_counter() - t)
        await asyncio.sleep(part.interval)
    stream.cancel()
    return failed


async def _run(part: Slice) -> tuple[list[float], list[float], int]:
    channels = [channel(part.root, f"s{i}", part.port) for i in range(part.first, part.last)]
    await asyncio.gather(*(c.channel_ready() for c in channels))  # handshakes not measured
    lat: list[float] = []
    base: list[float] = []
    n = max(1, len(channels))
    lives = [
        site_life(c, part, part.interval * (i * 7919 % n) / n, lat, None if i % 10 else base)
        for i, c in enumerate(channels)
    ]
    failed = await asyncio.gather(*lives)
    for c in channels:
        await c.close()
    return lat, base, sum(failed)


def ready(seconds: float) -> None:
    """Waits ``seconds``: the first task of each client process (which imports gRPC before
    a row starts, not during it)."""
    time.sleep(seconds)


_LOOP: asyncio.AbstractEventLoop | None = None
"""This process's one event loop: gRPC's asyncio support binds to the first it sees."""


def run_slice(part: Slice) -> tuple[list[float], list[float], int]:
    """Runs one slice of sites in this process; returns the latencies (s) of its
    heartbeats and of the baseline health checks, and its failed heartbeats."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(_run(part))
