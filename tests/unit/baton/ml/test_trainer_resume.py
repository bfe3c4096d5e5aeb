"""In-process within-hop checkpoints: a hop stopped or killed at any step resumes from its
newest checkpoint and ends with exactly the model of an uninterrupted hop; a checkpoint
that cannot be used is deleted and the hop trains again from step 0."""

from __future__ import annotations

import functools
import json
import logging
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from baton.errors import TrainingInterrupted
from baton.ml import checkpoint
from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.ml.trainer import TrainResult, train_local
from baton.plan import TrainingSection

SGD = TrainingSection(lr=0.05, batch_size=16, local_steps=11, momentum=0.9, weight_decay=1e-3)
ADAM = TrainingSection(lr=0.01, batch_size=16, local_steps=11, optimizer="adam", proximal_mu=0.1)


class _Killed(Exception):
    """Stands for a SIGKILL: raised from the progress callback, nothing cleaned up."""


def _split() -> Split:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)  # 4 steps per epoch of 16: the last batch is short
    x = rng.normal(size=(60, 5)) + y[:, None]
    return Split(x=x.astype(np.float32), y=y.astype(np.int64))


def _model() -> nn.Module:
    args = {"hidden": [8], "dropout": 0.3}  # dropout draws from the global RNG
    return build_model("mlp", args, num_features=5, num_classes=3, seed=1)


def _train(training: TrainingSection, model: nn.Module | None = None, **kw: object) -> nn.Module:
    model = model or _model()
    result = train_local(model, _split(), training, seed=7, hop_index=2, num_sites=3, **kw)  # type: ignore[arg-type]
    model.result = result  # type: ignore[assignment]
    return model


@functools.cache
def _plain(training: TrainingSection) -> nn.Module:
    """The uninterrupted hop, without checkpoints."""
    return _train(training)


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = state_of(a), state_of(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _result(model: nn.Module) -> TrainResult:
    result: TrainResult = model.result  # type: ignore[assignment]
    return result


@pytest.mark.parametrize("training", [SGD, ADAM], ids=["sgd", "adam-proximal"])
@pytest.mark.parametrize("stop_at", [6, 8], ids=["mid-epoch", "epoch-end"])
def test_a_stopped_hop_resumes_bit_identical(
    tmp_path: Path, training: TrainingSection, stop_at: int
) -> None:
    plain = _plain(training)
    job = tmp_path / "hop-00002.job"
    steps: list[int] = []

    def stop() -> bool:
        steps.append(len(steps) + 1)
        return len(steps) == stop_at

    with pytest.raises(TrainingInterrupted, match=f"after step {stop_at} of 11"):
        _train(training, checkpoint_dir=job, checkpoint_every=5, should_stop=stop)
    assert checkpoint.latest(job) == (stop_at, job / f"step-{stop_at:08d}")
    assert sorted(p.name for p in job.iterdir()) == ["latest.json", f"step-{stop_at:08d}"]
    assert stat.S_IMODE(job.stat().st_mode) == 0o700
    files = [p for p in job.rglob("*") if p.is_file()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    index = json.loads((job / f"step-{stop_at:08d}" / "rank-00000.json").read_text("utf-8"))
    assert index["extra"] == ["losses", "rng/shuffle", "rng/torch"]

    resumed = _train(training, checkpoint_dir=job, checkpoint_every=5)

    assert _result(resumed).resumed_from_step == stop_at
    assert _equal(resumed, plain)
    assert _result(resumed).final_loss == _result(plain).final_loss
    assert not job.exists()


def test_a_killed_hop_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    plain = _plain(SGD)
    job = tmp_path / "hop.job"
    checkpointed = _train(SGD, checkpoint_dir=job, checkpoint_every=3)
    assert _equal(checkpointed, plain)  # checkpoints change nothing of the arithmetic
    assert not job.exists()  # removed once the hop is trained

    def kill(step: int, total: int, loss: float) -> None:
        if step == 8:
            raise _Killed

    with pytest.raises(_Killed):
        _train(SGD, checkpoint_dir=job, checkpoint_every=3, progress=kill)
    assert checkpoint.latest(job) == (6, job / "step-00000006")
    assert len(list(job.glob("step-*"))) == 1  # older checkpoints go

    resumed = _train(SGD, checkpoint_dir=job, checkpoint_every=3)
    assert _result(resumed).resumed_from_step == 6
    assert _equal(resumed, plain)


def _break_index(step_dir: Path) -> None:
    (step_dir / "rank-00000.json").write_text('{"step": 6, "tens', encoding="utf-8")


def _break_latest(step_dir: Path) -> None:
    (step_dir.parent / "latest.json").write_bytes(b"\x00" * 10)


def _truncate_shard(step_dir: Path) -> None:
    shard = step_dir / "rank-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])


def _other_model(step_dir: Path) -> None:
    shard = step_dir / "rank-00000.safetensors"
    tensors = load_file(str(shard))
    first = sorted(k for k in tensors if k.startswith("model/"))[0]
    tensors[first] = torch.zeros(tensors[first].numel() + 1)
    save_file(tensors, str(shard))


def _bad_rng(step_dir: Path) -> None:
    shard = step_dir / "rank-00000.safetensors"
    tensors = load_file(str(shard))
    tensors["extra/rng/torch"] = torch.zeros(3, dtype=torch.uint8)
    save_file(tensors, str(shard))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_break_index, "rank-00000.json is not valid JSON"),
        (_break_latest, "latest.json is not valid JSON"),
        (_truncate_shard, "cannot be read"),
        (_other_model, "does not fit the model"),
        (_bad_rng, "'extra/rng/torch' does not fit the model"),
    ],
    ids=["index", "latest", "truncated-shard", "other-model", "rng"],
)
def test_an_unusable_checkpoint_is_deleted_and_the_hop_trains_from_step_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    plain = _plain(SGD)
    job = tmp_path / "hop.job"
    with pytest.raises(TrainingInterrupted):
        _train(SGD, checkpoint_dir=job, checkpoint_every=3, should_stop=lambda: True)
    damage(job / "step-00000001")  # type: ignore[operator]

    with caplog.at_level(logging.WARNING, logger="baton.ml.trainer"):
        again = _train(SGD, checkpoint_dir=job, checkpoint_every=3)

    assert _result(again).resumed_from_step == 0
    assert _equal(again, plain)
    [record] = [r for r in caplog.records if r.name == "baton.ml.trainer"]
    assert reason in record.getMessage()
    assert record.getMessage().endswith("training the hop again from step 0")
    assert not job.exists()
