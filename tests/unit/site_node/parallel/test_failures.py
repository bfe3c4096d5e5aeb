"""A killed hop resumes from its last checkpoint; a failed hop leaves no result behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from baton.errors import WorkerError
from baton.ml.codec import load_state_file
from site_node.parallel import checkpoint
from site_node.parallel.job import TrainSpec
from site_node.parallel.launch import launch, read_result, start_workers
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

LONG = TrainSpec(lr=0.05, momentum=0.9, batch_size=16, steps=300, seed=5)
"""Long enough (with a checkpoint every few steps) that a kill lands mid-hop."""


def _wait_for(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_killed_hop_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    c = case(LM, n=32)
    training = TrainSpec(lr=0.05, momentum=0.9, batch_size=8, steps=24, seed=5)
    plan = ParallelPlan(kind=PlanKind.FSDP, dp=2)
    job, path = write_job(tmp_path / "hop", c, plan=plan, training=training, checkpoint_every=3)
    running = start_workers(job, path, "fork")
    try:
        _wait_for(lambda: (checkpoint.latest(job.checkpoint_dir) or (0,))[0] >= 6, 60)
    finally:
        running.kill()
    found = checkpoint.latest(job.checkpoint_dir)
    assert found is not None
    killed_at = found[0]
    assert 6 <= killed_at < training.steps
    assert not job.output_path.exists()

    out = launch(path, starter="fork")

    result = read_result(job)
    assert result["resumed_from"] == killed_at
    assert result["steps"] == training.steps
    want_losses, want_state = reference(c, training)
    assert result["losses"][killed_at:] == pytest.approx(
        want_losses[killed_at:], abs=SGD_TOLERANCE, rel=0
    )
    assert max_diff(load_state_file(out), want_state) <= SGD_TOLERANCE


def test_crashed_worker_fails_the_hop_without_output(tmp_path: Path) -> None:
    job, path = write_job(
        tmp_path / "hop", case(MLP), plan=ParallelPlan(kind=PlanKind.DDP, dp=2), training=LONG
    )
    killed: list[int] = []

    def crash_one(line: dict[str, object]) -> None:
        if "step" in line and not killed:
            victim = multiprocessing.active_children()[-1]
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)

    with pytest.raises(WorkerError, match=r"worker process \d was killed by SIGKILL") as info:
        launch(path, starter="fork", progress=crash_one)
    assert killed
    assert info.value.message.startswith("training failed:")
    assert info.value.retryable  # a crash, not a refusal: starting again may succeed
    assert not job.output_path.exists()
    assert not job.result_path.exists()
    assert not multiprocessing.active_children()


def test_worker_reason_reaches_the_launcher(tmp_path: Path) -> None:
    job, path = write_job(
        tmp_path / "hop", case(MLP), plan=ParallelPlan(kind=PlanKind.DDP, dp=2), training=LONG
    )
    job.data_path.write_bytes(b"\x00" * 16)
    with pytest.raises(
        WorkerError, match=r"rank \d: ModelError: .*not a valid safetensors blob"
    ) as info:
        launch(path, starter="fork")
    assert not info.value.retryable  # the same input would fail the same way
    assert not job.output_path.exists()
    assert sorted(p.name for p in job.errors_dir.iterdir()) == ["rank-0.json", "rank-1.json"]
