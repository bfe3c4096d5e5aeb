"""Heartbeat latency of a real coordinator process under many streaming sites.

Run: ``python benchmarks/coordinator_load.py [--sites 50 200 500] [--runs 1000]
[--seconds 10] [--interval 2]``. A throwaway PKI issues every simulated site its own mTLS
certificate and certified keys; the coordinator (``coordinator serve``, its own process,
loopback only) starts over a database already holding ``--runs`` finished runs. Per row,
that many sites register, each opens an assignment stream and heartbeats every
``--interval`` seconds for ``--seconds`` seconds (after ``--warmup`` seconds in which
every stream opens, not counted in the latencies); the table gives heartbeat latency
percentiles, failed heartbeats (a lease at risk), the coordinator's RSS and CPU, and the
latency of ListSites and ListRuns. The ``+flood`` row repeats the smallest row while one
site opens 70 assignment streams and 70 header-less uploads. Bounded: every call has a
deadline, every row ends after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
from serve import serve_coordinator

from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import AppKeys, provision_app_keys
from baton.v1 import admin_pb2, admin_pb2_grpc, common_pb2, site_pb2, site_pb2_grpc
from baton.wire.channel import GRPC_OPTIONS
from coordinator.store.base import RunRecord, RunState
from coordinator.store.sqlite import SqliteStore

FEDERATION = "bench"
PLAN = '[run]\nname = "old"\nsites = ["s0"]\ncycles = 1\n\n[model]\nname = "logreg"\n\n'
PLAN += '[task]\ndataset = "breast_cancer"\n\n[ordering]\nstrategy = "fixed"\n'
PROFILE = common_pb2.DataProfile(num_examples=10, schema_hash="0" * 64, task="breast_cancer")


def make_pki(root: Path, sites: int) -> None:
    """A CA, the coordinator's and an admin's certificates, and ``sites`` sites with keys."""
    create_ca(root / "ca", FEDERATION)
    coord = Identity(federation=FEDERATION, kind="coordinator", name="coordinator")
    issue(root / "ca", root / "coordinator", coord, ip_addresses=["127.0.0.1"])
    issue(root / "ca", root / "admin", Identity(federation=FEDERATION, kind="admin", name="ops"))
    for i in range(sites):
        site = Identity(federation=FEDERATION, kind="site", name=f"s{i}")
        issue(root / "ca", root / f"s{i}", site)
        provision_app_keys(root / "ca", root / f"s{i}" / "keys", site)


def seed_runs(db: Path, runs: int) -> None:
    """``runs`` finished runs, as a long-lived coordinator's database holds them."""
    store = SqliteStore(db)
    for i in range(runs):
        run = RunRecord(
            run_id=f"old-{i:05d}",
            name="old",
            plan_toml=PLAN,
            sites=("s0",),
            cycles=1,
            strategy="fixed",
            total_hops=1,
            created_ms=i,
        )
        store.create_run(run)
        store.update_run(run.run_id, state=RunState.SUCCEEDED)
    store.close()


def start_coordinator(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``coordinator serve`` on a free loopback port; returns the process and its port."""
    return serve_coordinator(
        root,
        ca=root / "ca" / "ca.pem",
        cert=root / "coordinator" / "coordinator.pem",
        key=root / "coordinator" / "coordinator.key",
        lease_seconds=15.0,
    )


def channel(root: Path, name: str, port: int) -> grpc.aio.Channel:
    """An mTLS channel as ``name`` (``s<i>`` or ``ops``, the admin)."""
    folder = root / ("admin" if name == "ops" else name)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(root / "ca" / "ca.pem").read_bytes(),
        private_key=(folder / f"{name}.key").read_bytes(),
        certificate_chain=(folder / f"{name}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=list(GRPC_OPTIONS))


def usage(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds) of a process, from /proc."""
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def site_life(
    stub: site_pb2_grpc.SiteServiceStub,
    until: float,
    interval: float,
    lat: list[float],
    record_from: float,
) -> int:
    """Keeps one stream open and heartbeats until ``until``, recording the latency of the
    beats sent after ``record_from``; returns failed heartbeats (all of them)."""
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest())
    failed = 0
    await asyncio.sleep(interval * (hash(id(stub)) % 1000) / 1000)  # spread the beats
    while time.monotonic() < until:
        t = time.perf_counter()
        try:
            await stub.Heartbeat(site_pb2.HeartbeatRequest(), timeout=5)  # type: ignore[misc]
            if time.monotonic() >= record_from:
                lat.append(time.perf_counter() - t)
        except grpc.aio.AioRpcError:
            failed += 1
        await asyncio.sleep(interval)
    stream.cancel()
    return failed


async def flood(stub: site_pb2_grpc.SiteServiceStub, until: float) -> str:
    """70 assignment streams and 70 header-less uploads from one site."""

    async def nothing() -> AsyncIterator[site_pb2.UploadBlobRequest]:
        await asyncio.sleep(until - time.monotonic())
        yield site_pb2.UploadBlobRequest()  # never reached before the deadline

    calls: list[Any] = []
    streams = [stub.WatchAssignments(site_pb2.WatchAssignmentsRequest()) for _ in range(70)]
    uploads = [
        stub.UploadBlob(nothing(), timeout=until - time.monotonic())  # type: ignore[arg-type]
        for _ in range(70)
    ]
    calls.extend([*streams, *uploads])
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    refused = 0
    for call in calls:
        if call.done() and await call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused += 1
        call.cancel()
    return f"{refused}/140 refused"


async def timed(call: Awaitable[object]) -> float:
    """Milliseconds until ``call`` answers."""
    t = time.perf_counter()
    await call
    return (time.perf_counter() - t) * 1000


async def row(
    root: Path, port: int, pid: int, sites: int, args: argparse.Namespace, *, flooded: bool
) -> str:
    channels = [channel(root, f"s{i}", port) for i in range(sites)]
    stubs = [site_pb2_grpc.SiteServiceStub(c) for c in channels]
    for i, stub in enumerate(stubs):
        keys = AppKeys.load(root / f"s{i}" / "keys")
        await stub.Register(
            site_pb2.RegisterRequest(
                software_version="bench",
                signing_certificate_pem=keys.signing_cert_pem.decode(),
                encryption_certificate_pem=keys.encryption_cert_pem.decode(),
                profile=PROFILE,
            ),
            timeout=30,
        )
    admin_channel = channel(root, "ops", port)
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    _, cpu0 = usage(pid)
    t0 = time.monotonic()
    until = t0 + args.warmup + args.seconds
    lat: list[float] = []
    record_from = t0 + args.warmup
    tasks = [
        asyncio.create_task(site_life(s, until, args.interval, lat, record_from))
        for s in stubs[1 if flooded else 0 :]
    ]
    extra = [asyncio.create_task(flood(stubs[0], until))] if flooded else []
    await asyncio.sleep(args.warmup + args.seconds / 2)
    list_sites = await timed(admin.ListSites(admin_pb2.ListSitesRequest(), timeout=10))
    list_runs = await timed(admin.ListRuns(admin_pb2.ListRunsRequest(), timeout=30))
    results = await asyncio.gather(*tasks, *extra)
    rss, cpu1 = usage(pid)
    failed = sum(r for r in results if isinstance(r, int))
    note = results[-1] if flooded else ""
    for c in [*channels, admin_channel]:
        await c.close()
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    cpu = 100 * (cpu1 - cpu0) / (time.monotonic() - t0)
    name = f"{sites}{' +flood' if flooded else ''}"
    p50 = statistics.median(ms)
    return (
        f"| {name:>9} | {len(ms):>6} | {p50:>7.1f} | {p99:>7.1f} | {ms[-1]:>7.1f} | {failed:>6} "
        f"| {rss:>7.0f} | {cpu:>5.0f} | {list_sites:>9.1f} | {list_runs:>8.1f} | {note}"
    )


async def all_rows(root: Path, port: int, pid: int, args: argparse.Namespace) -> None:
    """Every row, in one event loop (gRPC's asyncio support wants only one)."""
    rows = [(n, False) for n in args.sites] + [(min(args.sites), True)]
    for sites, flooded in rows:
        print(await row(root, port, pid, sites, args, flooded=flooded), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--runs", type=int, default=1000, help="finished runs in the database")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between heartbeats")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of opening streams, not measured"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baton-load-") as tmp:
        root = Path(tmp)
        t = time.monotonic()
        make_pki(root, max(args.sites))
        (root / "state").mkdir(mode=0o700)
        seed_runs(root / "state" / "coordinator.db", args.runs)
        print(f"PKI for {max(args.sites)} sites and {args.runs} runs: {time.monotonic() - t:.0f} s")
        proc, port = start_coordinator(root)
        try:
            print(
                f"\nheartbeat every {args.interval:g} s per site for {args.seconds:g} s "
                f"after a {args.warmup:g} s warm-up; "
                f"{args.runs} finished runs; 1 stream per site; latencies in ms\n"
            )
            print(
                "|     sites | beats  | hb p50  | hb p99  | hb max  | failed | RSS MiB | CPU % "
                "| ListSites | ListRuns | note"
            )
            print("|" + "---|" * 10)
            asyncio.run(all_rows(root, port, proc.pid, args))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
