"""Heartbeat latency of a real coordinator process under many streaming sites.

Run: ``python benchmarks/coordinator_load.py [--sites 50 200 500] [--runs 1000]
[--seconds 10] [--interval 2] [--clients 2]``. A throwaway PKI issues every simulated site
its own mTLS certificate and certified keys; the coordinator (``coordinator serve``, its
own process, loopback only, its Heartbeat handler timed by ``load_probe.py``) starts over a
database already holding ``--runs`` finished runs. Per row, that many sites register, then
``--clients`` processes (``load_client.py``, one event loop each) open each site's channel
and assignment stream and heartbeat every ``--interval`` seconds for ``--seconds`` seconds
(after ``--warmup`` seconds, not counted). One site in ten follows each beat with a health
check, the baseline: same TLS, threads and machine, no lease work; ``ratio`` is heartbeat
p99 over baseline p99, which holds when other load shares the machine. The table gives
heartbeat latency percentiles, failed heartbeats (a lease at risk), the coordinator's RSS
and CPU, and the latency of ListSites and ListRuns; a second table sets the handler's own
time beside the clients'. The ``+flood`` row repeats the smallest row while one site opens
70 assignment streams and 70 header-less uploads. Bounded: every call has a deadline,
every row ends after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from load_client import Slice, channel, ready, run_slice
from load_probe import percentiles
from serve import serve_coordinator

from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import AppKeys, provision_app_keys
from baton.v1 import admin_pb2, admin_pb2_grpc, common_pb2, site_pb2, site_pb2_grpc
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


def start_coordinator(root: Path, timings: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``coordinator serve`` on a free loopback port, its Heartbeat handler timed into
    ``timings`` (see ``load_probe.py``); returns the process and its port."""
    return serve_coordinator(
        root,
        ca=root / "ca" / "ca.pem",
        cert=root / "coordinator" / "coordinator.pem",
        key=root / "coordinator" / "coordinator.key",
        lease_seconds=15.0,
        launcher=(str(Path(__file__).with_name("load_probe.py")), str(timings)),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Bench:
    """The options and the client processes, shared by every row."""

    args: argparse.Namespace
    pool: ProcessPoolExecutor


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """What one row measured; latencies in ms."""

    name: str
    beats: list[float]
    base: list[float]
    failed: int
    rss: float
    cpu: float
    list_sites: float
    list_runs: float
    window: tuple[float, float]
    note: str

    def p(self, q: float, of: list[float] | None = None) -> float:
        """The ``q`` quantile of the heartbeat latencies (or of ``of``)."""
        ms = self.beats if of is None else of
        return ms[min(len(ms) - 1, int(len(ms) * q))] if ms else float("nan")

    def line(self) -> str:
        """The table row: heartbeats, then the baseline health checks' p99 and the ratio."""
        base = self.p(0.99, self.base)
        return (
            f"| {self.name:>10} | {len(self.beats):>6} | {self.p(0.5):>6.1f} "
            f"| {self.p(0.99):>6.1f} | {self.beats[-1]:>6.1f} | {base:>7.1f} "
            f"| {self.p(0.99) / base:>5.2f}x | {self.failed:>6} "
            f"| {self.rss:>7.0f} | {self.cpu:>5.0f} | {self.list_sites:>9.1f} "
            f"| {self.list_runs:>8.1f} | {self.note}"
        )


def handler_table(rows: list[Row], timings: Path) -> None:
    """Per row, the Heartbeat handler's own time (from inside the coordinator) beside the
    clients' latency: the difference is gRPC, thread scheduling and the clients."""
    stamps = json.loads(timings.read_text()) if timings.exists() else []
    print("\n|        row | client p50 | client p99 | handler p50 | handler p99 | beats")
    print("|" + "---|" * 6)
    for r in rows:
        inside = [d for t, d in stamps if r.window[0] <= t <= r.window[1]]
        p50, p99 = percentiles(inside)
        print(
            f"| {r.name:>10} | {r.p(0.5):>10.1f} | {r.p(0.99):>10.1f} | {p50:>11.2f} "
            f"| {p99:>11.2f} | {len(inside)}"
        )


def usage(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds) of a process, from /proc."""
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def row(root: Path, port: int, pid: int, sites: int, bench: Bench, *, flooded: bool) -> Row:
    """One row: ``sites`` sites register, then stream and heartbeat from the client
    processes (the flooding site from this one)."""
    args = bench.args
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
    start = time.time() + 1.0  # the client processes open their channels meanwhile
    record_from = start + args.warmup
    until = record_from + args.seconds
    first = 1 if flooded else 0
    bounds = [first + (sites - first) * k // args.clients for k in range(args.clients + 1)]
    loop = asyncio.get_running_loop()
    parts = [
        loop.run_in_executor(
            bench.pool,
            run_slice,
            Slice(
                root=root,
                port=port,
                first=a,
                last=b,
                interval=args.interval,
                record_from=record_from,
                until=until,
            ),
        )
        for a, b in itertools.pairwise(bounds)
    ]
    extra = (
        [asyncio.create_task(flood(stubs[0], time.monotonic() + until - time.time()))]
        if flooded
        else []
    )
    await asyncio.sleep(until - time.time() - args.seconds / 2)
    list_sites = await timed(admin.ListSites(admin_pb2.ListSitesRequest(), timeout=10))
    list_runs = await timed(admin.ListRuns(admin_pb2.ListRunsRequest(), timeout=30))
    results = await asyncio.gather(*parts)
    notes = await asyncio.gather(*extra)
    rss, cpu1 = usage(pid)
    for c in [*channels, admin_channel]:
        await c.close()
    return Row(
        name=f"{sites}{' +flood' if flooded else ''}",
        beats=sorted(x * 1000 for r in results for x in r[0]),
        base=sorted(x * 1000 for r in results for x in r[1]),
        failed=sum(r[2] for r in results),
        rss=rss,
        cpu=100 * (cpu1 - cpu0) / (time.monotonic() - t0),
        list_sites=list_sites,
        list_runs=list_runs,
        window=(record_from, until),
        note=notes[0] if notes else "",
    )


async def all_rows(root: Path, port: int, pid: int, bench: Bench) -> list[Row]:
    """Every row, in one event loop (gRPC's asyncio support wants only one)."""
    args = bench.args
    specs = [(n, False) for n in args.sites] + [(min(args.sites), True)]
    rows: list[Row] = []
    for sites, flooded in specs:
        rows.append(await row(root, port, pid, sites, bench, flooded=flooded))
        print(rows[-1].line(), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--runs", type=int, default=1000, help="finished runs in the database")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between heartbeats")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of opening streams, not measured"
    )
    parser.add_argument(
        "--clients", type=int, default=2, help="client processes the sites are spread over"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baton-load-") as tmp:
        root = Path(tmp)
        t = time.monotonic()
        make_pki(root, max(args.sites))
        (root / "state").mkdir(mode=0o700)
        seed_runs(root / "state" / "coordinator.db", args.runs)
        print(f"PKI for {max(args.sites)} sites and {args.runs} runs: {time.monotonic() - t:.0f} s")
        timings = root / "handler.json"
        proc, port = start_coordinator(root, timings)
        spawn = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(args.clients, mp_context=spawn) as pool:
                list(pool.map(ready, [0.5] * args.clients))  # every process started
                print(
                    f"\nheartbeat every {args.interval:g} s per site for {args.seconds:g} s "
                    f"after a {args.warmup:g} s warm-up; {args.runs} finished runs; 1 stream "
                    f"per site; {args.clients} client process(es); latencies in ms\n"
                )
                print(
                    "|      sites | beats  | p50    | p99    | max    | base p99 | ratio | failed "
                    "| RSS MiB | CPU % | ListSites | ListRuns | note"
                )
                print("|" + "---|" * 12)
                rows = asyncio.run(all_rows(root, port, proc.pid, Bench(args=args, pool=pool)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        handler_table(rows, timings)


if __name__ == "__main__":
    main()
