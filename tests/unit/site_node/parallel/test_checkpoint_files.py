"""Within-hop checkpoints are safetensors shards and JSON indexes: nothing in them is
unpickled, a sharded FSDP hop with AdamW resumes bit-identical, and a tampered shard
fails the hop with a reason instead of being trusted."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from baton.errors import WorkerError
from baton.ml.codec import load_state_file
from site_node.parallel import checkpoint
from site_node.parallel.job import Job, TrainSpec
from site_node.parallel.launch import launch, read_result, start_workers
from site_node.parallel.plans import ParallelPlan, PlanKind
from tests.unit.site_node.parallel.helpers import LM, case, write_job

ADAMW = TrainSpec(optimizer="adamw", lr=0.01, batch_size=8, steps=30, seed=3)
FSDP = ParallelPlan(kind=PlanKind.FSDP, dp=2)
TP = ParallelPlan(kind=PlanKind.TP, tp=2)


class _Planted:
    """Unpickling this writes a marker file: proof that something read a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "unpickled"))


def _killed_after_a_checkpoint(workdir: Path, plan: ParallelPlan = FSDP) -> tuple[Job, Path, int]:
    """Starts a hop and kills its workers once a checkpoint at step >= 6 exists."""
    job, path = write_job(workdir, case(LM, n=32), plan=plan, training=ADAMW, checkpoint_every=3)
    running = start_workers(job, path, "fork")
    try:
        deadline = time.monotonic() + 60
        while (checkpoint.latest(job.checkpoint_dir) or (0,))[0] < 6:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.005)
    finally:
        running.kill()
    found = checkpoint.latest(job.checkpoint_dir)
    assert found is not None
    assert 6 <= found[0] < ADAMW.steps
    return job, path, found[0]


@pytest.mark.parametrize("plan", [FSDP, TP], ids=["fsdp", "tp"])
def test_a_killed_sharded_adamw_hop_resumes_bit_identical_without_reading_a_pickle(
    tmp_path: Path, plan: ParallelPlan
) -> None:
    _, whole = write_job(
        tmp_path / "whole", case(LM, n=32), plan=plan, training=ADAMW, checkpoint_every=3
    )
    uninterrupted = load_state_file(launch(whole, starter="fork"))
    job, path, killed_at = _killed_after_a_checkpoint(tmp_path / "hop", plan)
    newest = job.checkpoint_dir / f"step-{killed_at:08d}"
    names = sorted(p.name for p in newest.iterdir())
    assert names == [
        "rank-00000.json",
        "rank-00000.safetensors",
        "rank-00001.json",
        "rank-00001.safetensors",
    ]
    index = json.loads((newest / "rank-00000.json").read_text(encoding="utf-8"))
    assert index["step"] == killed_at
    # The optimizer's moments and step counters travel as tensors, its settings as JSON.
    assert any(k.startswith("optim/state.") and k.endswith(".exp_avg_sq") for k in index["tensors"])
    assert any(k.endswith(".betas") and v["kind"] == "tuple" for k, v in index["values"].items())
    # A torch.distributed.checkpoint loader would unpickle this file; ours never opens it.
    marker = tmp_path / "unpickled.txt"
    (newest / ".metadata").write_bytes(pickle.dumps(_Planted(marker)))

    resumed = load_state_file(launch(path, starter="fork"))

    assert not marker.exists()
    assert read_result(job)["resumed_from"] == killed_at
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.parametrize("tamper", ["shape", "missing", "world"])
def test_a_tampered_checkpoint_fails_the_hop_with_a_reason(tmp_path: Path, tamper: str) -> None:
    job, path, killed_at = _killed_after_a_checkpoint(tmp_path / "hop")
    newest = job.checkpoint_dir / f"step-{killed_at:08d}"
    shard = newest / "rank-00001.safetensors"
    tensors = load_file(str(shard))
    first = sorted(k for k in tensors if k.startswith("model/"))[0]
    if tamper == "shape":
        tensors[first] = torch.zeros(tensors[first].numel() + 1)
        save_file(tensors, str(shard))
        reason = f"the checkpoint's {first!r} does not fit the model"
    elif tamper == "missing":
        del tensors[first]
        save_file(tensors, str(shard))
        reason = "does not hold the model's tensors"
    else:
        latest = job.checkpoint_dir / checkpoint.LATEST
        raw = json.loads(latest.read_text(encoding="utf-8"))
        latest.write_text(json.dumps({**raw, "world": 4}), encoding="utf-8")
        reason = "was written by 4 workers, not 2"

    with pytest.raises(WorkerError) as err:
        launch(path, starter="fork")
    assert reason in err.value.message
    assert not job.output_path.exists()
