"""Tests for baton.ml.trainer: seeded local training, progress, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from baton.errors import DataError, ModelError
from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.ml.step import MAX_PROGRESS_CALLS
from baton.ml.trainer import evaluate, hop_seed, total_steps, train_local
from baton.plan import TrainingSection


def _blobs(n: int, seed: int, *, only: int | None = None) -> Split:
    """Two Gaussian blobs in 4-D, far from the origin and on different scales."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) if only is None else np.full(n, only)
    centers = np.array([[-3.0, 0, 0, 0], [3.0, 0, 0, 0]])
    x = (centers[y] + rng.normal(size=(n, 4))) * [1, 10, 100, 1] + 50
    return Split(x=x.astype(np.float32), y=y.astype(np.int64))


def _model(seed: int = 0) -> nn.Module:
    return build_model("mlp", {"hidden": [16]}, num_features=4, num_classes=2, seed=seed)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = state_of(a), state_of(b)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hop_seed_formula() -> None:
    assert hop_seed(0, 0) == 0
    assert hop_seed(3, 5) == 3 * 1_000_003 + 5
    assert hop_seed(-1, 0) == 2**63 - 1_000_003
    assert len({hop_seed(7, h) for h in range(100)}) == 100


def test_total_steps() -> None:
    assert total_steps(50, TrainingSection(batch_size=16, local_epochs=2)) == 8
    assert total_steps(48, TrainingSection(batch_size=16, local_epochs=1)) == 3
    assert total_steps(50, TrainingSection(batch_size=16, local_epochs=2, local_steps=5)) == 5


def test_evaluate_exact_values() -> None:
    model = build_model("logreg", {}, num_features=4, num_classes=2, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    split = Split(x=np.ones((4, 4), dtype=np.float32), y=np.array([0, 0, 0, 1], dtype=np.int64))
    metrics = evaluate(model, split)
    # All-zero logits: every loss is ln 2 and argmax picks class 0.
    assert metrics == {"accuracy": 0.75, "loss": pytest.approx(math.log(2)), "num_examples": 4.0}


def test_evaluate_keeps_mode_and_rejects_bad_splits() -> None:
    model = _model()
    model.train()
    evaluate(model, _blobs(10, 0))
    assert model.training
    empty = Split(x=np.zeros((0, 4), dtype=np.float32), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(DataError, match="no examples"):
        evaluate(model, empty)
    wrong = Split(x=np.zeros((2, 4), dtype=np.float32), y=np.array([0, 2], dtype=np.int64))
    with pytest.raises(DataError, match="outside the model's 2 classes"):
        evaluate(model, wrong)


def test_training_learns() -> None:
    train, val = _blobs(200, 0), _blobs(200, 1)
    model = _model()
    before = evaluate(model, val)
    result = train_local(model, train, TrainingSection(lr=0.05, local_epochs=3), seed=0)
    after = evaluate(model, val)
    assert before["accuracy"] < 0.8
    assert after["accuracy"] >= 0.97
    assert after["loss"] < before["loss"]
    assert result.num_examples == 200
    assert result.steps == 3 * 7
    assert 0 < result.final_loss < 0.2
    assert result.train_seconds > 0


def test_adam_learns() -> None:
    model = _model()
    training = TrainingSection(optimizer="adam", lr=0.01, local_epochs=3)
    train_local(model, _blobs(200, 0), training, seed=0)
    assert evaluate(model, _blobs(200, 1))["accuracy"] >= 0.97


def test_training_is_deterministic_and_keeps_global_rng() -> None:
    training = TrainingSection(lr=0.05, local_epochs=2)
    a, b, c = _model(), _model(), _model()
    dropout = build_model(
        "mlp", {"hidden": [8], "dropout": 0.5}, num_features=4, num_classes=2, seed=0
    )
    rng_before = torch.random.get_rng_state()
    train_local(a, _blobs(60, 0), training, seed=4)
    train_local(b, _blobs(60, 0), training, seed=4)
    train_local(c, _blobs(60, 0), training, seed=5)
    train_local(dropout, _blobs(60, 0), training, seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert _same(a, b)
    assert not _same(a, c)


def test_fits_input_norm_on_first_hop_only() -> None:
    model = _model()
    first = _blobs(100, 0)
    train_local(model, first, TrainingSection(local_steps=1), seed=0)
    mean = model.state_dict()["input_norm.mean"].clone()
    assert torch.allclose(mean, torch.from_numpy(first.x).mean(dim=0), rtol=1e-5)
    train_local(model, _blobs(100, 1, only=1), TrainingSection(local_steps=1), seed=1)
    assert torch.equal(model.state_dict()["input_norm.mean"], mean)


@pytest.mark.parametrize(("local_steps", "calls"), [(7, 7), (20, 20), (43, 20), (100, 20)])
def test_progress_reports(local_steps: int, calls: int) -> None:
    seen: list[tuple[int, int, float]] = []
    training = TrainingSection(local_steps=local_steps, batch_size=8)
    train_local(
        _model(),
        _blobs(30, 0),
        training,
        seed=0,
        progress=lambda s, t, loss: seen.append((s, t, loss)),
    )
    assert len(seen) == calls <= MAX_PROGRESS_CALLS
    steps = [s for s, _, _ in seen]
    assert steps == sorted(set(steps))
    assert seen[-1][:2] == (local_steps, local_steps)
    assert all(t == local_steps and math.isfinite(loss) for _, t, loss in seen)


def test_mode_is_restored() -> None:
    model = _model()
    model.eval()
    train_local(model, _blobs(20, 0), TrainingSection(local_steps=2), seed=0)
    assert not model.training


def test_divergence_is_an_error() -> None:
    """Weights that overflow every logit give a non-finite loss, which is refused."""
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e38)
    training = TrainingSection(lr=10.0, momentum=0.0, local_epochs=2)
    with pytest.raises(ModelError, match="diverged"):
        train_local(model, _blobs(50, 0), training, seed=0)


def test_bad_labels_are_rejected_before_training() -> None:
    model = _model()
    before = state_of(model)
    split = Split(x=np.ones((3, 4), dtype=np.float32), y=np.array([0, 1, 5], dtype=np.int64))
    with pytest.raises(DataError, match="outside the model's 2 classes"):
        train_local(model, split, TrainingSection(), seed=0)
    assert all(torch.equal(v, before[k]) for k, v in state_of(model).items())


def test_logit_adjustment_limits_forgetting_on_a_one_class_site() -> None:
    """A site holding one class should not teach the model to predict only that class."""
    balanced, one_class, val = _blobs(200, 0), _blobs(150, 2, only=0), _blobs(400, 3)
    results = {}
    for adjust in (True, False):
        model = _model()
        train_local(
            model,
            balanced,
            TrainingSection(lr=0.05, local_epochs=3, logit_adjustment=adjust),
            seed=0,
        )
        train_local(
            model,
            one_class,
            TrainingSection(lr=0.1, local_epochs=10, logit_adjustment=adjust),
            seed=1,
        )
        results[adjust] = evaluate(model, val)["accuracy"]
    assert results[True] >= 0.98
    assert results[False] < 0.9


def test_a_language_model_trains_on_every_next_token_and_is_scored_on_the_last() -> None:
    rng = np.random.default_rng(0)
    # The next token is always the previous one plus one (mod 8).
    start = rng.integers(0, 8, 256)
    seq = (start[:, None] + np.arange(7)[None, :]) % 8
    split = Split(x=seq[:, :6].astype(np.float32), y=seq[:, 6].astype(np.int64))
    model = build_model(
        "causal_lm", {"dim": 16, "layers": 1, "heads": 2}, num_features=6, num_classes=8, seed=0
    )
    before = evaluate(model, split)
    training = TrainingSection(optimizer="adam", lr=0.01, batch_size=32, local_epochs=4)
    train_local(model, split, training, seed=1)
    after = evaluate(model, split)
    assert before["accuracy"] < 0.3
    assert after["accuracy"] == 1.0
    # Every position learned, not just the scored one: the first token's successor too.
    with torch.no_grad():
        first = model(torch.from_numpy(split.x))[:, 0].argmax(dim=1).numpy()
    assert (first == (start + 1) % 8).mean() > 0.95
