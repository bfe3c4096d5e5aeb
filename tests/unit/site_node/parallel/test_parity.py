"""Every parallel plan trains like one process: same losses, same weights, complete export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baton.ml.codec import load_into, load_state_file
from site_node.parallel import families
from site_node.parallel.job import ModelSpec, TrainSpec
from site_node.parallel.launch import launch, read_result
from site_node.parallel.plans import ParallelPlan, PlanKind
from tests.unit.site_node.parallel.helpers import (
    LM,
    MLP,
    SGD_TOLERANCE,
    case,
    max_diff,
    reference,
    write_job,
)

TRAINING = TrainSpec(lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=16, steps=6, seed=3)
"""Six steps of four-batch epochs: crosses an epoch boundary (a new sampler order)."""


@pytest.mark.parametrize(
    ("spec", "plan", "broadcast"),
    [
        pytest.param(LM, ParallelPlan(kind=PlanKind.SINGLE), True, id="single-lm"),
        pytest.param(MLP, ParallelPlan(kind=PlanKind.DDP, dp=2), True, id="ddp-mlp"),
        pytest.param(LM, ParallelPlan(kind=PlanKind.FSDP, dp=2), False, id="fsdp-lm"),
        pytest.param(LM, ParallelPlan(kind=PlanKind.TP, tp=2), True, id="tp-lm"),
        pytest.param(MLP, ParallelPlan(kind=PlanKind.TP, tp=2), False, id="tp-mlp"),
        pytest.param(LM, ParallelPlan(kind=PlanKind.FSDP_TP, dp=2, tp=2), True, id="fsdp_tp-lm"),
    ],
)
def test_plan_matches_single_process(
    tmp_path: Path, spec: ModelSpec, plan: ParallelPlan, broadcast: bool
) -> None:
    c = case(spec)
    job, path = write_job(
        tmp_path / "hop", c, plan=plan, training=TRAINING, broadcast_from_rank0=broadcast
    )
    lines: list[dict[str, object]] = []
    out = launch(path, starter="fork", progress=lines.append)

    want_losses, want_state = reference(c, TRAINING)
    result = read_result(job)
    got = load_state_file(out)
    assert result["plan"] == plan.kind
    assert result["steps"] == TRAINING.steps
    assert result["losses"] == pytest.approx(want_losses, abs=SGD_TOLERANCE, rel=0)
    assert max_diff(got, want_state) <= SGD_TOLERANCE
    # Training moved the weights far more than the tolerance: the comparison is not vacuous.
    assert max_diff(c.weights, want_state) > 1000 * SGD_TOLERANCE
    # Complete export: every key at full shape, loadable into a fresh single-process model.
    fresh = families.build(spec, seed=99)
    assert {k: v.shape for k, v in got.items()} == {
        k: v.shape for k, v in fresh.state_dict().items()
    }
    load_into(fresh, got)
    assert torch.equal(
        fresh.state_dict()["head.weight" if spec is LM else "body.2.weight"],
        got["head.weight" if spec is LM else "body.2.weight"],
    )
    # Progress: a start line, then steps up to the last with loss and throughput.
    assert lines[0] == {"event": "start", "resumed_from": 0, "total": TRAINING.steps}
    assert lines[-1]["step"] == TRAINING.steps
    assert lines[-1]["loss"] == pytest.approx(want_losses[-1], abs=SGD_TOLERANCE)
    assert float(str(lines[-1]["samples_per_s"])) > 0
