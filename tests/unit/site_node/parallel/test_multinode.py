"""A hop spread over two machines of one site: torchrun's c10d rendezvous between the
daemon's node and a ``site-node worker-node`` process, both on loopback (slow: ~20 s)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from baton.errors import WorkerError
from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.plan import parse_plan
from sim.procs import ManagedProcess
from site_node.local_training import train_parallel
from site_node.parallel.nodes import ANNOUNCE_FILE, NodeGroup
from site_node.parallel.plans import ParallelPlan, PlanKind
from tests.unit.site_node.parallel.helpers import SGD_TOLERANCE

PLAN = """
[run]
name = "nodes"
sites = ["a"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[training]
batch_size = 16
local_steps = 12
"""
DDP = ParallelPlan(kind=PlanKind.DDP, dp=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hop(job_dir: Path, **kw: object) -> tuple[dict[str, torch.Tensor], int]:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 30)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plan = parse_plan(PLAN)
    model = build_model("mlp", {"hidden": [16]}, num_features=30, num_classes=2, seed=3)
    result = train_parallel(
        model,
        Split(x=x, y=y),
        plan,
        DDP,
        job_dir=job_dir,
        seed=9,
        hop_index=0,
        num_sites=1,
        **kw,  # type: ignore[arg-type]
    )
    return state_of(model), result.steps


@pytest.mark.slow
def test_two_nodes_train_one_hop_like_one_node(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    nodes = NodeGroup(
        nodes=2,
        endpoint=f"127.0.0.1:{_free_port()}",
        shared_dir=shared,
        local_addr="127.0.0.1",
        join_timeout_s=60,
    )
    other = ManagedProcess(
        "node-2",
        "site_node.cli",
        ["worker-node", "--shared-dir", str(shared), "--address", "127.0.0.1"],
        log_path=tmp_path / "node-2.log",
        env={"BATON_LOG_LEVEL": "INFO"},
    )
    log_path = tmp_path / "node-2.log"
    try:
        spread, steps = _hop(shared / "run" / "hop-00000.job", launcher="torchrun", nodes=nodes)
        # The other node's torchrun notices the end of its workers on its next look.
        deadline = time.monotonic() + 30
        while "this node's workers" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            other.check_alive()
            time.sleep(0.1)
    finally:
        code = other.stop()
    log = log_path.read_text()
    assert code == 0, log
    assert "joining rendezvous" in log
    assert "this node's workers finished" in log
    assert not (shared / ANNOUNCE_FILE).exists()
    assert not (shared / "run" / "hop-00000.job").exists()

    one_node, _ = _hop(tmp_path / "one.job", launcher="fork")
    assert steps == 12
    assert spread.keys() == one_node.keys()
    diff = max(float((spread[k] - one_node[k]).abs().max()) for k in spread)
    assert diff <= SGD_TOLERANCE
    # Training moved the weights far more than the tolerance: the comparison means something.
    start = state_of(build_model("mlp", {"hidden": [16]}, num_features=30, num_classes=2, seed=3))
    assert max(float((spread[k] - start[k]).abs().max()) for k in spread) > 100 * SGD_TOLERANCE


@pytest.mark.slow
def test_a_node_that_never_joins_fails_the_hop_with_the_reason(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = NodeGroup(
        nodes=2, endpoint=endpoint, shared_dir=shared, local_addr="127.0.0.1", join_timeout_s=3
    )
    with pytest.raises(WorkerError) as err:
        _hop(shared / "run" / "hop-00000.job", launcher="torchrun", nodes=nodes, restarts=0)
    assert err.value.message == (
        f"training failed: not all 2 nodes joined the rendezvous at {endpoint} within 3s "
        "(is 'site-node worker-node' running on the others?)"
    )
    assert not (shared / ANNOUNCE_FILE).exists()
    assert not (shared / "run" / "hop-00000.job").exists()
