"""A site daemon training in process is killed (SIGKILL) at ten seeded-random moments of
one run and started again each time: every interrupted hop resumes from its newest
within-hop checkpoint, and the run ends with exactly the model of an undisturbed run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from baton.ml import checkpoint
from baton.ml.codec import load_state_file
from baton.security.sealing import AppKeys
from baton.v1 import common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition
from tests.e2e.runs import trained_in_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEPS = 600
EVERY = 20
SITES = ["north", "south"]
PLAN = f"""
[run]
name = "kill-resume-e2e"
seed = 14
sites = ["north", "south"]
cycles = 2

[model]
name = "mlp"
args = {{ hidden = [16], dropout = 0.1 }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
batch_size = 16
local_steps = {STEPS}
"""
NORTH_HOPS = (0, 2)  # north trains hops 1 and 3 (0-based 0 and 2); south the others
IN_PROCESS = f"\n[training]\ncheckpoint_every = {EVERY}\n"


def _newest(jobs: list[Path]) -> tuple[int, int] | None:
    """(hop, step) of the newest checkpoint of north's hops, or None."""
    for hop, job in reversed(list(zip(NORTH_HOPS, jobs, strict=True))):
        found = checkpoint.latest(job) if job.exists() else None
        if found is not None:
            return hop, found[0]
    return None


def test_a_site_killed_ten_times_resumes_every_hop_bit_identical(tmp_path: Path) -> None:
    rng = random.Random(14)
    # Eight kills once a chosen checkpoint exists (four per north hop), two at a random
    # moment after a restart (starting, downloading, training or idle).
    chosen = {h: sorted(rng.sample(range(2, STEPS // EVERY - 2), 4)) for h in NORTH_HOPS}
    marks = [(h, s * EVERY) for h in NORTH_HOPS for s in chosen[h]]
    kills: list[tuple[int, int] | float] = [*marks]
    for _ in range(2):
        kills.insert(rng.randrange(1, len(kills)), rng.uniform(0.3, 3.0))
    layout, _ = provision(
        tmp_path, SITES, dataset="breast_cancer", partition=Partition(kind="iid"), seed=14
    )
    north_dir = layout.site_dir("north")
    tls = layout.admin_tls.load()
    owner = AppKeys.load(layout.owner_keys)
    killed_at: list[tuple[int, int] | None] = []
    with ProcessGroup() as group:
        extra = {s: IN_PROCESS for s in SITES}
        port = start(layout, SITES, group, site_config_extra=extra)
        north = next(p for p in group.procs if p.name == "north")
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, SITES, group)
            run = client.create_run(PLAN, owner)
            jobs = [north_dir / "work" / run.run_id / f"hop-{h:05d}.job" for h in NORTH_HOPS]
            for n, kill in enumerate(kills):
                started = time.monotonic()
                while isinstance(kill, tuple) and (_newest(jobs) or (-1, 0)) < kill:
                    assert time.monotonic() < started + 60, north.log_tail()
                    north.check_alive()
                    time.sleep(0.003)
                time.sleep(kill if isinstance(kill, float) else rng.uniform(0, 0.05))
                os.kill(north.proc.pid, signal.SIGKILL)
                assert north.stop() == -signal.SIGKILL
                group.procs.remove(north)
                killed_at.append(_newest(jobs))
                north = group.start(
                    f"north-{n + 2}",
                    "site_node.cli",
                    ["run", "--config", str(north_dir / "site.toml")],
                    log_path=north_dir / "site.log",
                )
            list(client.watch(run.run_id))
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
            result = tmp_path / "result.safetensors"
            fetch_result(client, run.run_id, result, owner=owner, ca_pem=tls.ca_pem)
        assert [p.stop() for p in group.procs] == [0, 0, 0]

    # Each mark's kill left its checkpoint, and the hop resumed from exactly there.
    for kill, at in zip(kills, killed_at, strict=True):
        if isinstance(kill, tuple):
            assert at is not None
            assert at[0] == kill[0]
            assert kill[1] <= at[1] < STEPS
    log = (north_dir / "site.log").read_text(encoding="utf-8")
    resumes = re.findall(r"hop (\d+): resumed from its checkpoint at step (\d+)", log)
    assert {(int(h) - 1, int(s)) for h, s in resumes} == {k for k in killed_at if k}
    lines = (north_dir / "work" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    audit = [json.loads(line) for line in lines]
    last = {hop: step for hop, step in (k for k in killed_at if k)}
    assert [(e["hop"], e["detail"]) for e in audit if e["event"] == "training_resumed"] == [
        (h, {"step": last[h], "steps": STEPS}) for h in NORTH_HOPS
    ]
    trained = load_state_file(result)
    want = trained_in_process(layout, PLAN, [SITES[hop % 2] for hop in range(4)])
    assert trained.keys() == want.keys()
    assert all(torch.equal(trained[k], want[k]) for k in want)
    assert not any(j.exists() for j in jobs)
