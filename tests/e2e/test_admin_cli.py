"""The study owner's commands against a live two-site federation of real processes."""

from __future__ import annotations

import json
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
from tests.unit.owner.test_report_html import assert_not_blank

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

        # Into a missing directory, past symlinks planted at the names it once used.
        out = tmp_path / "new" / "dir" / "model.safetensors"
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep")
        out.parent.mkdir(parents=True)
        for suffix in (".sealed", ".partial"):
            out.with_name(out.name + suffix).symlink_to(victim)
        fetched = baton("fetch", run_id, str(out), "--admin", str(admin))
        assert fetched.returncode == 0, fetched.stderr
        assert set(load_state_file(out)) >= {"input_norm.mean", "input_norm.std"}
        assert victim.read_bytes() == b"keep"
        assert sorted(p.name for p in out.parent.iterdir()) == [
            "model.safetensors",
            "model.safetensors.partial",
            "model.safetensors.sealed",
        ]
        missing = tmp_path / "absent" / "model.safetensors"
        fetched = baton("fetch", run_id, str(missing), "--admin", str(admin))
        assert fetched.returncode == 0, fetched.stderr
        assert load_state_file(missing).keys() == load_state_file(out).keys()
        into_dir = baton("fetch", run_id, str(tmp_path), "--admin", str(admin))
        assert into_dir.returncode == exit_codes.CLI_CONFIG
        assert f"{tmp_path} is a directory; name the model file to write" in into_dir.stderr

        report = baton("report", run_id, "--admin", str(admin), "--out", str(tmp_path / "r.json"))
        assert report.returncode == 0, report.stderr
        assert "plan sha256" in report.stdout
        pages = tmp_path / "report"
        report = baton("report", run_id, "--admin", str(admin), "--out", str(pages))
        assert report.returncode == 0, report.stderr
        assert f"report written to {pages / 'report.html'}" in report.stderr
        data = json.loads((tmp_path / "r.json").read_text())
        assert json.loads((pages / "report.json").read_text())["hops"] == data["hops"]
        assert [h["hop"] for h in data["hops"]] == [1, 2]
        assert all(h["receive_seconds"] > 0 and h["send_seconds"] >= 0 for h in data["hops"])
        page = (pages / "report.html").read_text()
        for h in data["hops"]:
            assert f'<td class="l">hop {h["hop"]}</td><td class="">1</td>' in page
            assert f'<td class="l">{h["site"]}</td>' in page
        for name in ("metric", "order", "timing", "final"):
            assert_not_blank(pages / f"{name}.png")

        logs = baton("logs", run_id, "--admin", str(admin))
        assert logs.returncode == 0, logs.stderr
        lines = logs.stdout.splitlines()
        assert " run_created " in lines[0]
        assert sum(" run_succeeded " in line for line in lines) == 1
        assert any(" hop_completed  hop 2 cycle 1 beta " in line for line in lines)
        logs = baton("logs", run_id, "--admin", str(admin), "--json")
        records = [json.loads(line) for line in logs.stdout.splitlines()]
        assert [r["seq"] for r in records] == list(range(1, len(lines) + 1))
        done = [(r["hop"], r["site"]) for r in records if r["kind"] == "hop_completed"]
        assert done == [(1, "alpha"), (2, "beta")]

        cancel = baton("cancel", run_id, "--admin", str(admin))
        assert cancel.returncode == exit_codes.CLI_ERROR
        assert f"run {run_id} already succeeded" in cancel.stderr
