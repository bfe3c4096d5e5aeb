"""A site is killed in the middle of a parallel hop, workers and all, and started again:
the hop resumes from the workers' newest checkpoint and hands on exactly the model an
uninterrupted hop would have."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from baton.ml.codec import load_state_file, state_of
from baton.ml.data import read_site_data
from baton.ml.models import plan_model
from baton.ml.trainer import hop_seed
from baton.plan import parse_plan
from baton.security.sealing import AppKeys
from baton.v1 import common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition
from site_node.local_training import train_parallel
from site_node.parallel import checkpoint
from site_node.parallel.plans import ParallelPlan, PlanKind

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAN = """
[run]
name = "resume-e2e"
seed = 5
sites = ["north"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
batch_size = 16
local_steps = 1500
"""
EVERY = 50
PARALLEL = (
    '\n[training]\nparallel_plan = "ddp"\nworkers = 2\nlauncher = "fork"\n'
    f"checkpoint_every = {EVERY}\nrestarts = 0\n"
)


def _uninterrupted(site_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """North's hop trained in this process's workers, never interrupted."""
    plan = parse_plan(PLAN)
    schema, data = read_site_data(site_dir / "data")
    model = plan_model(plan, schema)
    train_parallel(
        model,
        data.train,
        plan,
        ParallelPlan(kind=PlanKind.DDP, dp=2),
        launcher="fork",
        job_dir=tmp_path / "reference.job",
        seed=hop_seed(plan.run.seed, 0),
        hop_index=0,
        num_sites=1,
    )
    return state_of(model)


def test_a_killed_site_resumes_its_hop_from_the_last_checkpoint(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path, ["north"], dataset="breast_cancer", partition=Partition(kind="iid"), seed=5
    )
    site_dir = layout.site_dir("north")
    tls = layout.admin_tls.load()
    owner = AppKeys.load(layout.owner_keys)
    with ProcessGroup() as group:
        port = start(layout, ["north"], group, site_config_extra={"north": PARALLEL})
        north = group.procs[-1]
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, ["north"], group)
            run = client.create_run(PLAN, owner)
            checkpoints = site_dir / "work" / run.run_id / "hop-00000.job" / "checkpoints"
            deadline = time.monotonic() + 120
            while (checkpoint.latest(checkpoints) or (0,))[0] < 2 * EVERY:
                assert time.monotonic() < deadline, north.log_tail()
                north.check_alive()
                time.sleep(0.005)
            # A crash of the whole site: daemon and workers at once, no clean-up.
            os.killpg(north.proc.pid, signal.SIGKILL)
            assert north.stop() == -signal.SIGKILL
            group.procs.remove(north)
            found = checkpoint.latest(checkpoints)
            assert found is not None
            killed_at = found[0]
            assert killed_at < 1500
            group.start(
                "north-2",
                "site_node.cli",
                ["run", "--config", str(site_dir / "site.toml")],
                log_path=site_dir / "site.log",
            )
            list(client.watch(run.run_id))
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
            result = tmp_path / "result.safetensors"
            fetch_result(client, run.run_id, result, owner=owner, ca_pem=tls.ca_pem)
        assert [p.stop() for p in group.procs] == [0, 0]

    entries = [
        json.loads(line) for line in (site_dir / "work" / "audit.jsonl").read_text().splitlines()
    ]
    resumed = [e for e in entries if e["event"] == "training_resumed"]
    assert [(e["hop"], e["detail"]) for e in resumed] == [(0, {"step": killed_at, "steps": 1500})]
    trained = load_state_file(result)
    want = _uninterrupted(site_dir, tmp_path)
    assert trained.keys() == want.keys()
    assert all(torch.equal(trained[k], want[k]) for k in want)
    assert not (site_dir / "work" / run.run_id / "hop-00000.job").exists()
