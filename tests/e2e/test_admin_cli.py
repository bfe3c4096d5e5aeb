"""The study owner's commands against a live two-site federation of real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from baton import exit_codes
from baton.ml.codec import load_state_file
from sim.localfed import provision, start
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["alpha", "beta"]
PLAN = """
[run]
name = "cli"
sites = ["alpha", "beta"]
evaluate_at_sites = true

[model]
name = "logreg"

[task]
dataset = "wine"

[ordering]
strategy = "fixed"
"""


def baton(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "owner.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_watch_status_fetch(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path / "fed", SITES, dataset="wine", partition=Partition(kind="iid"), seed=1
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    with ProcessGroup() as group:
        port = start(layout, SITES, group)
        admin = tmp_path / "admin.toml"
        pki = layout.owner_dir / "pki"
        admin.write_text(
            f'coordinator = "127.0.0.1:{port}"\nkeys_dir = "{layout.owner_keys}"\n'
            f'[tls]\nca = "{pki / "ca.pem"}"\n'
            f'cert = "{pki / "study-owner.pem"}"\nkey = "{pki / "study-owner.key"}"\n'
        )
        for _ in range(30):
            sites = baton("sites", "--admin", str(admin))
            if sites.stdout.count(" yes ") == 2:
                break
        assert sites.returncode == 0, sites.stderr
        assert "alpha" in sites.stdout
        assert "beta" in sites.stdout

        sub = baton("submit", str(plan), "--admin", str(admin), "--watch")
        assert sub.returncode == 0, sub.stdout + sub.stderr
        run_id = sub.stdout.split()[1]
        assert "run_succeeded" in sub.stdout
        assert sub.stdout.count("hop_completed") == 2

        runs = baton("runs", "--admin", str(admin))
        assert run_id in runs.stdout
        assert "succeeded" in runs.stdout

        status = baton("status", run_id, "--admin", str(admin))
        assert status.stdout.count("completed") == 2

        # Each site evaluates the final model after the run; status then shows the scores.
        def scores(out: str) -> str:
            return out.split("final model", 1)[1] if "final model" in out else ""

        for _ in range(60):
            if all(f"│ {s} " in scores(status.stdout) for s in SITES):
                break
            time.sleep(0.5)
            status = baton("status", run_id, "--admin", str(admin))
        assert all(f"│ {s} " in scores(status.stdout) for s in SITES), status.stdout

        verified = baton("verify-run", run_id, "--admin", str(admin))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.count("ok") >= 2

        out = tmp_path / "model.safetensors"
        fetched = baton("fetch", run_id, str(out), "--admin", str(admin))
        assert fetched.returncode == 0, fetched.stderr
        assert set(load_state_file(out)) >= {"input_norm.mean", "input_norm.std"}

        cancel = baton("cancel", run_id, "--admin", str(admin))
        assert cancel.returncode == exit_codes.CLI_ERROR
        assert f"run {run_id} already succeeded" in cancel.stderr
