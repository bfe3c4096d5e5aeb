"""One relayed, sealed hop against its baselines, on this machine (``baton bench hop``).

Run: ``python benchmarks/hop_bench.py --size-bytes N [--reps 3] [--out FILE]``. A throwaway
PKI; a real coordinator process (``coordinator serve``, mTLS, loopback); per repetition a
new two-site run, a sender process (``seal_file``, ``site_node.transfer.upload``,
``CompleteHop``) and a receiver process (``site_node.transfer.download``, with
``open_file`` opening what arrived meanwhile). The sender seals the copy a site keeps
sealed to itself beside its upload, as a site does (``--own-copy before``: before the
upload, as sites did; ``none``: not at all). The coordinator cuts the hop through (the
receiver is offered its hop when the upload starts and downloads while it arrives), so
``relay_wait`` is 0 and ``download`` is what the download took beyond the hop's end.
The baselines run in the same repetition: raw TCP loopback, a plain gRPC relay with and
without mTLS (1 MiB chunks, no crypto, upload then download) and ``cp``. GB/s counts 1e9
bytes of plaintext; every figure is the median over the repetitions; RSS is the peak
above the process's idle resident set (coordinator: its largest over the repetitions);
CPU seconds are what each party used during the hop (user + system; the coordinator's
include the download's cut-through reads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hop_baselines import cp_copy, relay_copy, tcp_copy
from hop_world import (
    PLAN,
    PROFILE,
    SITES,
    cpu_seconds,
    dial,
    make_pki,
    reset_peak,
    rss_mib,
    start_coordinator,
    write_model,
)

from baton.security.sealing import AppKeys, sign_plan
from baton.v1 import admin_pb2, admin_pb2_grpc, site_pb2, site_pb2_grpc

HERE = Path(__file__).resolve().parent
STAGES = ("seal", "upload", "complete", "relay_wait", "download", "open")


def _register(root: Path, port: int) -> None:
    for site in SITES:
        keys = AppKeys.load(root / site / "keys")
        with dial(root, site, port) as chan:
            site_pb2_grpc.SiteServiceStub(chan).Register(
                site_pb2.RegisterRequest(
                    software_version="bench",
                    signing_certificate_pem=keys.signing_cert_pem.decode(),
                    encryption_certificate_pem=keys.encryption_cert_pem.decode(),
                    profile=PROFILE,
                ),
                timeout=30,
            )


def _create_run(admin: admin_pb2_grpc.AdminServiceStub, root: Path, rep: int) -> str:
    owner = AppKeys.load(root / "owner" / "keys")
    text = PLAN.format(rep=rep)
    request = admin_pb2.CreateRunRequest(
        plan_toml=text,
        plan_signature=sign_plan(text, owner.signing_key),
        owner_signing_certificate_pem=owner.signing_cert_pem.decode(),
        owner_encryption_certificate_pem=owner.encryption_cert_pem.decode(),
    )
    return str(admin.CreateRun(request, timeout=30).run.run_id)


def _party(
    role: str, root: Path, port: int, run_id: str, work: Path, own_copy: str = "beside"
) -> subprocess.Popen[str]:
    args = [sys.executable, str(HERE / "hop_party.py"), role, str(root), str(port), run_id]
    return subprocess.Popen([*args, str(work), own_copy], stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"a hop party failed (exit {proc.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


def one_hop(
    root: Path, port: int, coordinator: int, run_id: str, work: Path, own_copy: str
) -> dict[str, Any]:
    """One hop through the coordinator: stage seconds and the parties' peak RSS."""
    for name in ("out.sealed", "own.sealed", "in.sealed", "opened.bin"):
        (work / name).unlink(missing_ok=True)
    reset_peak(coordinator)
    coordinator_idle, coordinator_cpu = rss_mib(coordinator), cpu_seconds(coordinator)
    recv = _party("recv", root, port, run_id, work)
    send = _party("send", root, port, run_id, work, own_copy)
    s, r = _result(send), _result(recv)
    if (work / "opened.bin").read_bytes() != (work / "model.bin").read_bytes():
        raise SystemExit("the opened model differs from the sent one")
    # Stages split the hop's time line: under cut-through the download runs beside the
    # upload, and "download" is only what it took beyond the hop's completion.
    assigned = max(s["complete"], r["assigned"])
    downloaded = max(assigned, r["download"])
    stages = {
        "seal": s["seal"] - s["start"],
        "upload": s["upload"] - s["seal"],
        "complete": s["complete"] - s["upload"],
        "relay_wait": assigned - s["complete"],
        "download": downloaded - assigned,
        "open": r["open"] - downloaded,
    }
    return {
        "hop_seconds": r["open"] - s["start"],
        "stages": stages,
        "rss": {
            "coordinator": rss_mib(coordinator, "VmHWM") - coordinator_idle,
            "sender": s["rss_above_idle_mib"],
            "receiver": r["rss_above_idle_mib"],
        },
        "cpu": {
            "coordinator": cpu_seconds(coordinator) - coordinator_cpu,
            "sender": s["cpu_seconds"],
            "receiver": r["cpu_seconds"],
        },
    }


def run(size: int, reps: int, root: Path, own_copy: str = "beside") -> dict[str, Any]:
    """The whole measurement; returns the JSON report."""
    work = root / "work"
    work.mkdir()
    make_pki(root)
    write_model(work / "model.bin", size)
    proc, port = start_coordinator(root)
    hops: list[dict[str, Any]] = []
    base: dict[str, list[float]] = {
        "tcp": [], "relay_mtls": [], "relay_plain": [], "relay_cut": [], "cp": [],
    }  # fmt: skip
    try:
        _register(root, port)
        with dial(root, "owner", port) as chan:
            admin = admin_pb2_grpc.AdminServiceStub(chan)
            for rep in range(reps):
                src, dst = work / "model.bin", work / "copy.bin"
                base["tcp"].append(tcp_copy(src, dst))
                base["relay_mtls"].append(relay_copy(root, src, dst, tls=True))
                base["relay_plain"].append(relay_copy(root, src, dst, tls=False))
                base["relay_cut"].append(relay_copy(root, src, dst, tls=True, cut=True))
                base["cp"].append(cp_copy(src, dst))
                dst.unlink()
                run_id = _create_run(admin, root, rep)
                hops.append(one_hop(root, port, proc.pid, run_id, work, own_copy))
                print(f"rep {rep + 1}/{reps}: hop {hops[-1]['hop_seconds']:.2f} s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    med = {k: statistics.median(v) for k, v in base.items()}
    hop = statistics.median(h["hop_seconds"] for h in hops)

    def gbps(seconds: float) -> float:
        return size / 1e9 / seconds

    return {
        "size_bytes": size,
        "reps": reps,
        "own_copy": own_copy,
        "hop_seconds": hop,
        "hop_gbps": gbps(hop),
        "relay_mtls_gbps": gbps(med["relay_mtls"]),
        "relay_plain_gbps": gbps(med["relay_plain"]),
        "relay_cut_through_gbps": gbps(med["relay_cut"]),
        "tcp_gbps": gbps(med["tcp"]),
        "cp_gbps": gbps(med["cp"]),
        "ratio_vs_relay_mtls": med["relay_mtls"] / hop,
        "ratio_vs_tcp": med["tcp"] / hop,
        "stages": {k: statistics.median(h["stages"][k] for h in hops) for k in STAGES},
        "rss_above_idle_mib": {
            "coordinator": max(h["rss"]["coordinator"] for h in hops),
            "sender": max(h["rss"]["sender"] for h in hops),
            "receiver": max(h["rss"]["receiver"] for h in hops),
        },
        "cpu_seconds": {
            party: statistics.median(h["cpu"][party] for h in hops)
            for party in ("coordinator", "sender", "receiver")
        },
        "baseline_seconds": med,
    }


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    size = report["size_bytes"]
    mib = f"{size / (1 << 20):g} MiB"
    rows = [f"| path | {mib} | GB/s | hop's share |", "|---|---|---|---|"]
    for name, key in (("raw TCP loopback copy", "tcp"), ("cp", "cp"),
                      ("plain gRPC relay, mTLS (up + down)", "relay_mtls"),
                      ("plain gRPC relay, no TLS (up + down)", "relay_plain"),
                      ("cut-through relay, mTLS (down while up)", "relay_cut")):  # fmt: skip
        secs = report["baseline_seconds"][key]
        rows.append(f"| {name} | {secs:.2f} s | {size / 1e9 / secs:.3f} | "
                    f"{secs / report['hop_seconds']:.2f}x |")  # fmt: skip
    stages = " + ".join(f"{k} {v:.2f}" for k, v in report["stages"].items())
    rows.append(f"| Baton hop: {stages} | {report['hop_seconds']:.2f} s | "
                f"{report['hop_gbps']:.3f} | 1 |")  # fmt: skip
    rss = ", ".join(f"{k} +{v:.0f}" for k, v in report["rss_above_idle_mib"].items())
    rows.append(f"\nPeak RSS above idle (MiB): {rss}.")
    cpu = report["cpu_seconds"]
    used = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
    rows.append(f"CPU seconds: {used}; {sum(cpu.values()) / report['hop_seconds']:.2f} "
                f"cores busy on average.")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    """Parses the arguments, measures, prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-bytes", type=int, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--own-copy", choices=("beside", "before", "none"), default="beside")
    args = parser.parse_args()
    if args.size_bytes < 1 or args.reps < 1:
        raise SystemExit("--size-bytes and --reps must be positive")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="baton-hop-bench-") as tmp:
        report = run(args.size_bytes, args.reps, Path(tmp), args.own_copy)
    report["wall_seconds"] = time.monotonic() - start
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
