"""A site daemon is killed with SIGKILL while it holds a hop's opened input in plaintext:
at its next start it deletes that file before anything else, and the run still ends with
no plaintext model left at the site."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from baton.security.sealing import AppKeys
from baton.v1 import common_pb2
from owner.client import AdminClient
from sim.localfed import provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAN = """
[run]
name = "sweep-e2e"
seed = 3
sites = ["south", "north"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
batch_size = 16
local_steps = 4000
"""
SWEPT = "plaintext a stopped daemon left behind"


def test_plaintext_left_by_a_killed_site_is_swept_at_its_next_start(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path,
        ["south", "north"],
        dataset="breast_cancer",
        partition=Partition(kind="iid"),
        seed=3,
    )
    north_dir = layout.site_dir("north")
    tls = layout.admin_tls.load()
    owner = AppKeys.load(layout.owner_keys)
    with ProcessGroup() as group:
        port = start(layout, ["south", "north"], group)
        north = group.procs[-1]
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, ["south", "north"], group)
            run = client.create_run(PLAN, owner)
            run_dir = north_dir / "work" / run.run_id
            opened = run_dir / "hop-00001.in.safetensors"
            deadline = time.monotonic() + 120
            while not opened.exists():
                assert time.monotonic() < deadline, north.log_tail()
                north.check_alive()
                time.sleep(0.002)
            # The whole site at once, mid-hop: no clean-up runs.
            os.killpg(north.proc.pid, signal.SIGKILL)
            assert north.stop() == -signal.SIGKILL
            group.procs.remove(north)
            assert opened.exists()
            before = (north_dir / "site.log").read_text(encoding="utf-8", errors="replace")
            assert SWEPT not in before
            group.start(
                "north-2",
                "site_node.cli",
                ["run", "--config", str(north_dir / "site.toml")],
                log_path=north_dir / "site.log",
            )
            list(client.watch(run.run_id))
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
        assert [p.stop() for p in group.procs] == [0, 0, 0]

    log = (north_dir / "site.log").read_text(encoding="utf-8", errors="replace")
    restarted = log[len(before) :].splitlines()
    swept = [i for i, line in enumerate(restarted) if SWEPT in line]
    assert [restarted[i] for i in swept] == [
        line for line in restarted if f"removed {opened}: {SWEPT}" in line
    ]
    assert len(swept) == 1, "\n".join(restarted[:20])
    # The sweep ran at start, before the daemon took the hop again.
    hop_lines = [i for i, line in enumerate(restarted) if "hop 2" in line]
    assert hop_lines
    assert swept[0] < hop_lines[0]
    assert sorted(p.name for p in run_dir.glob("*.safetensors*")) == []
