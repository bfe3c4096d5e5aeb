"""A real run whose first hop trains a causal language model with a 2-rank tensor-parallel
plan: the site daemon launches torchrun, loads the workers' full model and seals it to the
next site, which trains on in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baton.v1 import admin_pb2
from sim.localfed import provision
from sim.tasks import Partition
from tests.e2e.runs import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["north", "south"]

PLAN = """
[run]
name = "parallel-e2e"
seed = 3
sites = ["north", "south"]

[model]
name = "causal_lm"
args = { dim = 16, layers = 1, heads = 2 }

[task]
dataset = "tokens"

[ordering]
strategy = "fixed"

[training]
optimizer = "adam"
lr = 0.01
local_steps = 30
"""

PARALLEL = '\n[training]\nparallel_plan = "tp"\nworkers = 2\nlauncher = "torchrun"\n'


def test_a_daemon_trains_a_language_model_with_tensor_parallel_workers(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path, SITES, dataset="tokens", partition=Partition(kind="iid"), seed=3
    )
    outcome = run_to_the_end(layout, SITES, PLAN, site_config_extra={"north": PARALLEL})
    final, events, state = outcome.run, outcome.events, outcome.state
    assert outcome.exit_codes == [0, 0, 0]

    hops = list(final.hops)
    assert [(h.hop_index, h.site_id) for h in hops] == [(0, "north"), (1, "south")]
    assert hops[1].input.blob_id == hops[0].output.blob_id
    # north's progress came from its workers (throughput is reported by them only).
    progress = [
        dict(e.metrics)
        for e in events
        if e.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS and e.message == "progress"
    ]
    north = [p for p in progress if "samples_per_s" in p]
    assert north
    assert north[-1]["step"] == north[-1]["total_steps"] == 30
    assert any("samples_per_s" not in p for p in progress)  # south trained in process
    log = (layout.site_dir("north") / "site.log").read_text()
    assert "training hop 0 with plan tp on 2 workers (torchrun)" in log
    assert all(torch.isfinite(t).all() for t in state.values())
    # Chance is 1/16: both hops learned the token language.
    assert hops[0].metrics_after["accuracy"] > 0.4
    assert hops[1].metrics_after["accuracy"] > 0.6
    for site in SITES:
        work = layout.site_dir(site) / "work"
        assert not list(work.rglob("*.safetensors"))
