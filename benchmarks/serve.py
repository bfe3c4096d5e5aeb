"""A real ``coordinator serve`` process for the benchmarks, on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def serve_coordinator(
    root: Path,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    lease_seconds: float,
    launcher: tuple[str, ...] = ("-m", "coordinator.cli"),
    tables: str = "",
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts ``coordinator serve`` with its state under ``root``; returns it and its port.
    ``launcher``: the interpreter's arguments that run the coordinator's CLI. ``tables``:
    more TOML tables for its config file.

    Raises:
        SystemExit: It exited or wrote no port file within 60 s.
    """
    (root / "coordinator.toml").write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{root / "state"}"\n'
        f"lease_seconds = {lease_seconds}\n"
        f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n{tables}'
    )
    port_file = root / "port"
    env = {**os.environ, "BATON_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, *launcher, "serve", "-c", str(root / "coordinator.toml")]
    proc = subprocess.Popen([*cmd, "--port-file", str(port_file)], env=env)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the coordinator did not start (exit {proc.poll()})")
        time.sleep(0.1)
    return proc, int(port_file.read_text())
