"""The hop benchmark's world: a throwaway PKI, a coordinator process, mTLS channels, RSS."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import numpy as np
from serve import serve_coordinator

from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import provision_app_keys
from baton.security.tls import TlsFiles, channel_credentials
from baton.v1 import common_pb2
from baton.wire.channel import secure_channel

FEDERATION = "hopbench"
SITES = ("site-a", "site-b")
"""The sender (holds hop 0) and the receiver (holds hop 1)."""
PROFILE = common_pb2.DataProfile(
    num_examples=10, label_histogram=[5, 5], schema_hash="0" * 64, task="breast_cancer"
)
PLAN = """[run]
name = "hop-bench-{rep}"
sites = ["site-a", "site-b"]
cycles = 1

[model]
name = "logreg"

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"
"""


def identity(name: str) -> Identity:
    """The federation identity of ``owner``, ``coordinator`` or a site."""
    kind = {"owner": "admin", "coordinator": "coordinator"}.get(name, "site")
    return Identity(federation=FEDERATION, kind=kind, name=name)


def make_pki(root: Path) -> None:
    """A CA, the coordinator's certificate, and the owner and sites with certified keys."""
    create_ca(root / "ca", FEDERATION)
    issue(root / "ca", root / "coordinator", identity("coordinator"), ip_addresses=["127.0.0.1"])
    for name in ("owner", *SITES):
        issue(root / "ca", root / name, identity(name))
        provision_app_keys(root / "ca", root / name / "keys", identity(name))


def tls_files(root: Path, name: str) -> TlsFiles:
    """The TLS files of a party made by :func:`make_pki`."""
    return TlsFiles(ca=root / "ca" / "ca.pem", cert=root / name / f"{name}.pem",
                    key=root / name / f"{name}.key")  # fmt: skip


def dial(
    root: Path, name: str, port: int, *, options: list[tuple[str, int]] | None = None
) -> grpc.Channel:
    """An mTLS channel to 127.0.0.1:``port`` as ``name``, with Baton's limits (or
    ``options``)."""
    creds = channel_credentials(tls_files(root, name).load())
    if options is None:
        return secure_channel(f"127.0.0.1:{port}", creds)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options)


def start_coordinator(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``coordinator serve`` on a free loopback port, with a lease no hop outlasts, cutting
    hops through (the next site downloads while the upload arrives)."""
    tls = tls_files(root, "coordinator")
    return serve_coordinator(
        root, ca=tls.ca, cert=tls.cert, key=tls.key, lease_seconds=3600.0,
        tables="[transfers]\ncut_through = true\n",
    )  # fmt: skip


def write_model(path: Path, size: int) -> None:
    """Writes ``size`` bytes of random float32 values (a model's weights), 16 MiB at a time."""
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(16 << 20, left)
            f.write(rng.standard_normal((n + 3) // 4, dtype=np.float32).tobytes()[:n])
            left -= n


def rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A process's resident set (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/{pid}/status has no {field}")


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time (user + system) a process used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | str = "self") -> None:
    """Starts a new ``VmHWM`` window for the process (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
