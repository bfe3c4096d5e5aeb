"""The causal LM family: shapes, causality, arguments, TP degrees and synthetic data."""

from __future__ import annotations

import pytest
import torch

from baton.errors import ModelError
from baton.ml import models_lm
from baton.ml.families import family
from site_node.parallel import families
from site_node.parallel.job import ModelSpec
from tests.unit.site_node.parallel.helpers import LM, MLP

LOGREG = ModelSpec(name="logreg", num_features=8, num_classes=3)


def _lm() -> models_lm.CausalLM:
    model = families.build(LM, seed=0)
    assert isinstance(model, models_lm.CausalLM)
    return model


def test_logits_shape_and_causality() -> None:
    model = _lm()
    tokens = torch.randint(0, 16, (3, 8), generator=torch.Generator().manual_seed(0))
    logits = model(tokens)
    assert logits.shape == (3, 8, 16)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 16
    # Positions before 5 cannot see the change; position 5 and later do.
    other = model(changed)
    assert torch.equal(logits[:, :5], other[:, :5])
    assert not torch.allclose(logits[:, 5:], other[:, 5:])


def test_arguments_are_checked() -> None:
    with pytest.raises(ModelError, match="unknown argument 'width'"):
        models_lm.build_causal_lm({"width": 3}, 8, 16)
    with pytest.raises(ModelError, match="does not divide into 3 heads"):
        models_lm.build_causal_lm({"dim": 32, "heads": 3}, 8, 16)


def test_tp_degrees_and_plans() -> None:
    lm_family = family(models_lm.FAMILY)
    assert lm_family.tp_degrees(_lm(), limit=8) == (2, 4)
    plan = lm_family.tp_plan(_lm())
    assert plan is not None
    assert sorted(plan) == sorted(
        f"layers.{i}.{n}"
        for i in range(2)
        for n in ("attn.q", "attn.k", "attn.v", "attn.wo", "ff.w1", "ff.w2")
    )
    mlp = families.build(MLP)
    assert family("mlp").tp_degrees(mlp, limit=8) == (2, 4, 8)
    assert sorted(family("mlp").tp_plan(mlp) or {}) == ["body.0", "body.2"]
    assert family("logreg").tp_plan(families.build(LOGREG)) is None


def test_footprint_counts_parameters() -> None:
    model = _lm()
    fp = families.footprint(model, optimizer="sgd", batch=8, example_shape=(8,))
    assert fp.num_params == sum(p.numel() for p in model.parameters())
    assert fp.unit_bytes == 4 * sum(p.numel() for p in model.layers[0].parameters())
    assert fp.activation_bytes > 0
    assert fp.tp_degrees[:2] == (2, 4)


def test_synthetic_tokens_are_seeded_and_structured() -> None:
    a = models_lm.synthetic_tokens(n=64, seq_len=12, vocab=16, seed=3)
    assert a.shape == (64, 13)
    assert a.dtype == torch.int64
    assert torch.equal(a, models_lm.synthetic_tokens(n=64, seq_len=12, vocab=16, seed=3))
    assert not torch.equal(a, models_lm.synthetic_tokens(n=64, seq_len=12, vocab=16, seed=4))
    assert int(a.min()) >= 0
    assert int(a.max()) < 16
    # Most steps follow the rule x[t+1] = 3 x[t] + step (mod vocab) for one step per row.
    diffs = (a[:, 1:] - 3 * a[:, :-1]) % 16
    share = (diffs == diffs.mode(dim=1).values[:, None]).float().mean()
    assert share > 0.7
