"""A hop's workers crash, or the site stops, mid-training: the hop resumes from its newest
within-hop checkpoint and ends with exactly the weights of an uninterrupted hop."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from baton.errors import TrainingInterrupted, WorkerError
from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.ml.trainer import TrainResult
from baton.plan import RunPlan, parse_plan
from site_node.local_training import train_parallel
from site_node.parallel import checkpoint
from site_node.parallel.plans import ParallelPlan, PlanKind

PLAN = """
[run]
name = "resume"
sites = ["a", "b"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[training]
batch_size = 16
local_steps = 240
"""
EVERY = 20
DDP = ParallelPlan(kind=PlanKind.DDP, dp=2)


def _split(n: int = 96, seed: int = 4) -> Split:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 30)) * 2 + 1).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=n) > 1).astype(np.int64)
    return Split(x=x, y=y)


def _model(plan: RunPlan) -> torch.nn.Module:
    return build_model(plan.model.name, plan.model.args, num_features=30, num_classes=2, seed=7)


def _train(tmp_path: Path, model: torch.nn.Module, plan: RunPlan, **kw: object) -> TrainResult:
    return train_parallel(
        model,
        _split(),
        plan,
        DDP,
        launcher="fork",
        job_dir=tmp_path / "hop.job",
        seed=11,
        hop_index=0,
        num_sites=2,
        checkpoint_every=EVERY,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    plan = parse_plan(PLAN)
    model = _model(plan)
    result = _train(tmp_path_factory.mktemp("whole"), model, plan)
    assert result.resumed_from_step == 0
    assert result.steps == 240
    return state_of(model)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crashed_workers_start_again_from_the_newest_checkpoint(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    plan = parse_plan(PLAN)
    model = _model(plan)
    checkpoints = tmp_path / "hop.job" / "checkpoints"
    # The newest checkpoint's step when a worker was killed. Not the progress line's
    # step: that lags the workers, which may have checkpointed further by then.
    killed: list[int] = []

    def crash_once(step: int, total: int, loss: float, extra: dict[str, float]) -> None:
        newest = checkpoint.latest(checkpoints)
        if not killed and newest is not None:
            victim = multiprocessing.active_children()[-1]
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(newest[0])

    result = _train(tmp_path, model, plan, restarts=1, progress=crash_once)

    assert killed, "the workers finished before a checkpoint was written"
    assert result.resumed_from_step > 0
    assert result.resumed_from_step % EVERY == 0
    assert killed[0] <= result.resumed_from_step < result.steps == 240
    assert _same(state_of(model), uninterrupted)
    assert not (tmp_path / "hop.job").exists()


def test_without_restarts_a_crash_fails_the_hop_and_removes_its_directory(
    tmp_path: Path,
) -> None:
    plan = parse_plan(PLAN)
    model = _model(plan)
    before = state_of(model)

    def crash(step: int, total: int, loss: float, extra: dict[str, float]) -> None:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(WorkerError, match="killed by SIGKILL") as info:
        _train(tmp_path, model, plan, restarts=0, progress=crash)
    assert info.value.retryable
    assert _same(state_of(model), before)  # the travelling model is untouched
    assert not (tmp_path / "hop.job").exists()


def test_a_stopping_site_keeps_its_checkpoints_and_resumes_the_hop(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    plan = parse_plan(PLAN)
    model = _model(plan)
    before = state_of(model)
    checkpoints = tmp_path / "hop.job" / "checkpoints"

    def stop_after_a_checkpoint() -> bool:
        found = checkpoint.latest(checkpoints)
        return found is not None and found[0] >= 2 * EVERY

    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, model, plan, should_stop=stop_after_a_checkpoint)
    assert _same(state_of(model), before)
    assert not multiprocessing.active_children()
    found = checkpoint.latest(checkpoints)
    assert found is not None
    stopped_at = found[0]
    assert 2 * EVERY <= stopped_at < 240

    # The hop is delivered again: same model, same data, same job.
    result = _train(tmp_path, model, plan)

    assert result.resumed_from_step == stopped_at
    assert _same(state_of(model), uninterrupted)
    assert not (tmp_path / "hop.job").exists()


def test_checkpoints_of_another_input_are_never_resumed(tmp_path: Path) -> None:
    plan = parse_plan(PLAN)
    checkpoints = tmp_path / "hop.job" / "checkpoints"
    with pytest.raises(TrainingInterrupted):
        _train(
            tmp_path,
            _model(plan),
            plan,
            should_stop=lambda: checkpoint.latest(checkpoints) is not None,
        )
    assert checkpoint.latest(checkpoints) is not None

    other = build_model("mlp", {"hidden": [16]}, num_features=30, num_classes=2, seed=8)
    result = _train(tmp_path, other, plan)

    assert result.resumed_from_step == 0
