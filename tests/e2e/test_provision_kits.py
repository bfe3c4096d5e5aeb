"""A federation from ``baton provision`` kits, run as a new user would: every step a CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baton import exit_codes
from baton.ml.codec import load_state_file
from baton.ml.data import write_site_data
from sim.procs import ProcessGroup
from sim.tasks import Partition, make_federation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["hospital-1", "hospital-2"]


def cli(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs one of the three binaries as its own process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=cwd,
    )


def free_port() -> int:
    """A port nothing listens on now (the kits need a fixed one, as real ones do)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_kits(tmp_path: Path, addresses: str, port: int, sites: list[str]) -> Path:
    """Provisions kits through the CLI and gives every site its share of a bundled table."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = tmp_path / "federation.toml"
    names = ", ".join(f'"{s}"' for s in sites)
    spec.write_text(
        f'name = "loopback"\nsites = [{names}]\n\n'
        f'[coordinator]\naddresses = {addresses}\nport = {port}\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    out = tmp_path / "kits"
    made = cli("owner.cli", "provision", str(spec), "--out", str(out))
    assert made.returncode == 0, made.stderr
    fed = make_federation("breast_cancer", sites, Partition(kind="iid"), seed=0)
    for site in sites:
        write_site_data(out / "sites" / site / "data", fed.sites[site], fed.schema)
    return out


def start_coordinator(group: ProcessGroup, kits: Path, port: int) -> None:
    """Starts the coordinator from its kit and waits until it listens on ``port``."""
    group.start(
        "coordinator",
        "coordinator.cli",
        ["serve", "--config", str(kits / "coordinator" / "coordinator.toml")],
        log_path=kits / "coordinator.log",
    )
    wait_listening(port, group)


def wait_listening(port: int, group: ProcessGroup, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.check_alive()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the coordinator did not listen on {port} in {timeout:.0f}s")


def test_kits_run_a_federation_through_the_clis(tmp_path: Path) -> None:
    port = free_port()
    kits = make_kits(tmp_path, '["localhost", "127.0.0.1"]', port, SITES)
    owner = kits / "owner"
    with ProcessGroup() as group:
        early = cli(
            "site_node.cli", "check", "--config", "site.toml", cwd=kits / "sites" / SITES[0]
        )
        assert early.returncode == 205
        assert "FAIL  coordinator: not listening: nothing accepts connections at " in early.stdout

        start_coordinator(group, kits, port)
        for site in SITES:
            site_dir = kits / "sites" / site
            check = cli("site_node.cli", "check", "--config", "site.toml", cwd=site_dir)
            assert check.returncode == 0, check.stdout + check.stderr
            assert check.stdout.splitlines()[-1].startswith("READY: 8 checks passed")
            assert f"ok    coordinator: localhost:{port} accepts this party's" in check.stdout
            group.start(
                site,
                "site_node.cli",
                ["run", "--config", str(site_dir / "site.toml")],
                log_path=tmp_path / f"{site}.log",
            )
        admin = str(owner / "admin.toml")
        for _ in range(60):
            ready = cli("owner.cli", "check", "--admin", admin)
            if "2 online" in ready.stdout:
                break
            time.sleep(0.5)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "2 site(s) registered, 2 online: hospital-1, hospital-2" in ready.stdout

        sub = cli("owner.cli", "submit", str(owner / "plan.toml"), "--admin", admin, "--watch")
        assert sub.returncode == 0, sub.stdout + sub.stderr
        run_id = sub.stdout.split()[1]
        assert sub.stdout.count("hop_completed") == 2

        runs = cli("owner.cli", "runs", "--admin", admin, "--json")
        assert runs.returncode == 0, runs.stderr
        listed = {r["run_id"]: r for r in json.loads(runs.stdout)}
        assert listed[run_id]["state"] == "RUN_STATE_SUCCEEDED"
        sites = json.loads(cli("owner.cli", "sites", "--admin", admin, "--json").stdout)
        assert sorted(s["site_id"] for s in sites) == SITES

        # A run cancelled while it goes on: watching it exits with "cancelled", not
        # "unreachable" nor "failed".
        long_plan = owner / "long-plan.toml"
        plan_text = (owner / "plan.toml").read_text(encoding="utf-8")
        long_plan.write_text(plan_text.replace("cycles = 1", "cycles = 40"), encoding="utf-8")
        second = cli("owner.cli", "submit", str(long_plan), "--admin", admin)
        assert second.returncode == 0, second.stderr
        long_id = second.stdout.split()[1]
        assert cli("owner.cli", "cancel", long_id, "--admin", admin).returncode == 0
        watched = cli("owner.cli", "watch", long_id, "--admin", admin)
        assert watched.returncode == exit_codes.CLI_RUN_CANCELLED, watched.stderr
        assert f"run {long_id} ended cancelled" in watched.stderr

        model = owner / "model.safetensors"
        fetched = cli("owner.cli", "fetch", run_id, str(model), "--admin", admin)
        assert fetched.returncode == 0, fetched.stderr
        assert set(load_state_file(model)) >= {"input_norm.mean", "input_norm.std"}

        report = owner / "report.json"
        reported = cli("owner.cli", "report", run_id, "--admin", admin, "--out", str(report))
        assert reported.returncode == 0, reported.stderr
        data = json.loads(report.read_text(encoding="utf-8"))
        assert [h["hop"] for h in data["hops"]] == [1, 2]
        assert all(h["state"] == "completed" and h["bytes_out"] > 0 for h in data["hops"])
        assert f"plan sha256 {data['plan_sha256']}" in reported.stdout
