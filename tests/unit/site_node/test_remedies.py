"""Tests for the trainer's forgetting remedies: proportional steps, cyclical lr, proximal pull."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.ml.step import proximal_penalty
from baton.ml.trainer import hop_lr, total_steps, train_local
from baton.plan import TrainingSection


def _blobs(n: int, seed: int, *, only: int | None = None) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) if only is None else np.full(n, only)
    centers = np.array([[-3.0, 0, 0, 0], [3.0, 0, 0, 0]])
    x = (centers[y] + rng.normal(size=(n, 4))) * [1, 10, 100, 1] + 50
    return Split(x=x.astype(np.float32), y=y.astype(np.int64))


def _model(seed: int = 0) -> nn.Module:
    return build_model("mlp", {"hidden": [16]}, num_features=4, num_classes=2, seed=seed)


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = state_of(a), state_of(b)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _proportional(**kwargs: object) -> TrainingSection:
    return TrainingSection(proportional_steps=True, reference_examples=100, **kwargs)  # type: ignore[arg-type]


def test_proportional_steps_scale_with_the_sites_own_size() -> None:
    fixed = _proportional(batch_size=16, local_steps=10)
    assert [total_steps(n, fixed) for n in (50, 100, 200, 149, 1)] == [5, 10, 20, 15, 1]
    # With epochs, the base is the epochs' steps over the reference size: 2 * ceil(100/16).
    epochs = _proportional(batch_size=16, local_epochs=2)
    assert total_steps(100, epochs) == 14
    assert total_steps(50, epochs) == 7
    assert total_steps(300, epochs) == 42
    # Off, the size does not matter with local_steps.
    assert total_steps(300, TrainingSection(local_steps=10, reference_examples=100)) == 10


def test_proportional_steps_reach_the_trainer() -> None:
    result = train_local(_model(), _blobs(30, 0), _proportional(local_steps=10), seed=0)
    assert result.steps == 3
    result = train_local(_model(), _blobs(250, 0), _proportional(local_steps=10), seed=0)
    assert result.steps == 25


def test_cyclical_lr_falls_along_each_cycle() -> None:
    cyc = TrainingSection(lr=0.2, lr_schedule="cyclical", lr_min_ratio=0.1)
    lrs = [hop_lr(cyc, h, 5) for h in range(10)]
    assert lrs[0] == lrs[5] == 0.2  # first hop of each cycle: the full rate
    assert lrs[4] == lrs[9] == pytest.approx(0.02)  # last hop: lr * lr_min_ratio
    assert lrs[2] == pytest.approx(0.2 * (0.1 + 0.9 * 0.5))  # mid-cycle: half way
    assert lrs[1] == pytest.approx(0.2 * (0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2))
    assert all(a > b for a, b in itertools.pairwise(lrs[:5]))
    assert lrs[5:] == lrs[:5]
    assert [hop_lr(cyc, h, 1) for h in range(3)] == [0.2, 0.2, 0.2]
    assert hop_lr(cyc, 1, 2) == pytest.approx(0.02)
    constant = TrainingSection(lr=0.2)
    assert {hop_lr(constant, h, 5) for h in range(10)} == {0.2}
    with pytest.raises(ValueError, match="hop_index"):
        hop_lr(cyc, -1, 5)
    with pytest.raises(ValueError, match="num_sites"):
        hop_lr(cyc, 0, 0)


def test_cycle_decay_scales_every_hop_of_a_cycle() -> None:
    constant = TrainingSection(lr=0.2, cycle_decay=0.5)
    assert [hop_lr(constant, h, 3) for h in range(9)] == [0.2] * 3 + [0.1] * 3 + [0.05] * 3
    assert [hop_lr(constant, h, 1) for h in range(4)] == [0.2, 0.1, 0.05, 0.025]
    cyc = TrainingSection(lr=0.2, lr_schedule="cyclical", lr_min_ratio=0.1, cycle_decay=0.5)
    plain = dataclasses.replace(cyc, cycle_decay=1.0)
    assert hop_lr(cyc, 0, 5) == 0.2
    assert hop_lr(cyc, 10, 5) == 0.05  # cycle 2, position 0: lr * 0.5**2
    assert hop_lr(cyc, 14, 5) == pytest.approx(0.2 * 0.1 * 0.25)  # cycle 2, last hop
    for h in range(15):
        assert hop_lr(cyc, h, 5) == pytest.approx(hop_lr(plain, h, 5) * 0.5 ** (h // 5))
    assert [hop_lr(plain, h, 5) for h in range(5, 10)] == [hop_lr(plain, h, 5) for h in range(5)]
    assert {hop_lr(TrainingSection(lr=0.2), h, 5) for h in range(15)} == {0.2}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cyclical_lr_is_the_rate_the_hop_trains_at(optimizer: str) -> None:
    cyc = TrainingSection(
        optimizer=optimizer, lr=0.05, lr_schedule="cyclical", lr_min_ratio=0.2, local_steps=5
    )
    a, b, c = _model(), _model(), _model()
    train_local(a, _blobs(40, 0), cyc, seed=3, hop_index=7, num_sites=4)  # last of its cycle
    plain = dataclasses.replace(cyc, lr=0.05 * 0.2, lr_schedule="constant")
    train_local(b, _blobs(40, 0), plain, seed=3)
    train_local(c, _blobs(40, 0), cyc, seed=3, hop_index=4, num_sites=4)  # first: full rate
    assert _same(a, b)
    assert not _same(a, c)


def test_proximal_penalty_value() -> None:
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    a = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert float(proximal_penalty(p, a, 0.5)) == pytest.approx(0.25 * (1 + 4 + 4))


def test_proximal_pull_has_no_gradient_at_the_incoming_weights() -> None:
    # The first step starts at the incoming weights, where the pull's gradient is zero.
    a, b = _model(), _model()
    train_local(a, _blobs(40, 0), TrainingSection(local_steps=1), seed=0)
    train_local(b, _blobs(40, 0), TrainingSection(local_steps=1, proximal_mu=5.0), seed=0)
    assert _same(a, b)


def test_proximal_pull_keeps_the_weights_near_the_incoming_ones() -> None:
    first = _model()
    train_local(
        first, _blobs(200, 0), TrainingSection(local_epochs=2, logit_adjustment=False), seed=0
    )
    incoming = _params(first)
    drift = {}
    for mu in (0.0, 1.0, 10.0):  # a one-class site, plain cross-entropy: a strong pull away
        model = _model()
        model.load_state_dict(first.state_dict())
        training = TrainingSection(lr=0.05, local_epochs=5, proximal_mu=mu, logit_adjustment=False)
        train_local(model, _blobs(150, 2, only=0), training, seed=1)
        drift[mu] = float((_params(model) - incoming).norm())
    # The pull is toward the incoming weights: drift shrinks as mu grows, by a wide margin.
    assert drift[0.0] > 0.5
    assert drift[1.0] < 0.3 * drift[0.0]
    assert drift[10.0] < 0.05 * drift[0.0]


def test_defaults_leave_training_unchanged() -> None:
    a, b = _model(), _model()
    train_local(a, _blobs(60, 0), TrainingSection(local_epochs=2), seed=4)
    explicit = TrainingSection(
        local_epochs=2, lr_schedule="constant", proximal_mu=0.0, reference_examples=60
    )
    train_local(b, _blobs(60, 0), explicit, seed=4, hop_index=9, num_sites=5)
    assert _same(a, b)
