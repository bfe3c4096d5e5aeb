"""One hop end to end through a real ``torchrun`` with two workers (slow: ~12 s)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from baton.ml.codec import load_state_file
from site_node.parallel.job import TrainSpec
from site_node.parallel.launch import launch, read_result
from site_node.parallel.plans import ParallelPlan, PlanKind
from tests.unit.site_node.parallel.helpers import (
    MLP,
    SGD_TOLERANCE,
    case,
    max_diff,
    reference,
    write_job,
)


@pytest.mark.slow
def test_ddp_hop_through_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    c = case(MLP)
    training = TrainSpec(lr=0.1, batch_size=16, steps=4, seed=2)
    job, path = write_job(
        tmp_path / "hop", c, plan=ParallelPlan(kind=PlanKind.DDP, dp=2), training=training
    )
    assert stat.S_IMODE(job.dir.stat().st_mode) == 0o700
    lines: list[dict[str, object]] = []

    out = launch(path, starter="torchrun", progress=lines.append)

    assert [line.get("step") for line in lines[1:]] == [1, 2, 3, 4]
    assert read_result(job)["plan"] == "ddp"
    _, want = reference(c, training)
    assert max_diff(load_state_file(out), want) <= SGD_TOLERANCE
    # torchrun's own log directory stays inside the job directory, not the system's.
    assert list(system_tmp.iterdir()) == []
    assert (job.dir / "torchrun").is_dir()
