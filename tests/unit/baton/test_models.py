"""Tests for baton.ml.models: the registry, seeded building and the travelling input norm."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from baton.errors import DataError, ModelError
from baton.ml.models import build_model, known_models
from baton.ml.norm import InputNorm, fit_input_norm


def _mlp(seed: int = 0, **args: Any) -> nn.Module:
    return build_model("mlp", args, num_features=5, num_classes=3, seed=seed)


def test_known_models() -> None:
    assert known_models() == ("mlp", "logreg", "causal_lm", "cnn", "hf_causal_lm")


def test_mlp_default_shape() -> None:
    model = _mlp()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "input_norm.mean": (5,),
        "input_norm.std": (5,),
        "input_norm.fitted": (),
        "body.0.weight": (64, 5),
        "body.0.bias": (64,),
        "body.2.weight": (3, 64),
        "body.2.bias": (3,),
    }
    assert model(torch.zeros(4, 5)).shape == (4, 3)


def test_mlp_hidden_layers_and_dropout() -> None:
    model = _mlp(hidden=[8, 4], dropout=0.25)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 8), (8, 4), (4, 3)]
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.25, 0.25]


def test_logreg_keys() -> None:
    model = build_model("logreg", {}, num_features=4, num_classes=2, seed=0)
    assert sorted(model.state_dict()) == [
        "input_norm.fitted",
        "input_norm.mean",
        "input_norm.std",
        "linear.bias",
        "linear.weight",
    ]


def test_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    a, b, c = _mlp(seed=1), _mlp(seed=1), _mlp(seed=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.state_dict()["body.0.weight"], c.state_dict()["body.0.weight"])


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("resnet", {}, "unknown model 'resnet'; known: mlp, logreg"),
        ("mlp", {"width": 3}, "unknown argument 'width' for model 'mlp'; known: hidden, dropout"),
        ("logreg", {"hidden": [3]}, "unknown argument 'hidden' for model 'logreg'; known: none"),
        ("mlp", {"hidden": 64}, "'hidden' must be a non-empty list of integers"),
        ("mlp", {"hidden": []}, "'hidden' must be a non-empty list of integers"),
        ("mlp", {"hidden": [8, "8"]}, r"'hidden' must hold integers in \[1, 65536\]"),
        ("mlp", {"hidden": [True]}, r"'hidden' must hold integers in \[1, 65536\]"),
        ("mlp", {"hidden": [0]}, r"'hidden' must hold integers in \[1, 65536\]"),
        ("mlp", {"dropout": 1.0}, r"'dropout' must be a number in \[0, 1\)"),
        ("mlp", {"dropout": "0.1"}, r"'dropout' must be a number in \[0, 1\)"),
    ],
)
def test_build_rejects(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(name, args, num_features=3, num_classes=2, seed=0)


def test_unfitted_norm_is_identity() -> None:
    norm = InputNorm(3)
    x = torch.tensor([[1.0, -2.0, 300.0]])
    assert torch.equal(norm(x), x)


def test_fit_input_norm_fits_once() -> None:
    model = _mlp()
    x = torch.tensor(
        [[1.0, 10.0, 5.0, 0.0, 2.0], [3.0, 30.0, 5.0, 0.0, 4.0], [5.0, 50.0, 5.0, 0.0, 9.0]]
    )
    assert fit_input_norm(model, x) is True
    state = model.state_dict()
    assert torch.allclose(state["input_norm.mean"], x.mean(dim=0))
    expected_std = x.std(dim=0, correction=0)
    expected_std[2] = expected_std[3] = 1.0  # constant features are centred, not scaled
    assert torch.allclose(state["input_norm.std"], expected_std)
    assert state["input_norm.fitted"].item() == 1.0
    # A second site keeps the first site's moments.
    assert fit_input_norm(model, x * 100) is False
    assert torch.allclose(model.state_dict()["input_norm.mean"], x.mean(dim=0))


def test_fitted_norm_travels_with_the_weights() -> None:
    first = _mlp()
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0)) * 7 + 3
    fit_input_norm(first, x)
    second = _mlp(seed=5)
    second.load_state_dict(first.state_dict())
    assert fit_input_norm(second, torch.zeros(3, 5)) is False
    normalized = second.input_norm(x)  # type: ignore[operator]
    assert torch.allclose(normalized.mean(dim=0), torch.zeros(5), atol=1e-5)


def test_fit_input_norm_errors() -> None:
    with pytest.raises(ModelError, match="no input normalization"):
        fit_input_norm(nn.Linear(2, 2), torch.zeros(3, 2))
    with pytest.raises(DataError, match="non-empty"):
        fit_input_norm(_mlp(), torch.zeros(0, 5))
    with pytest.raises(DataError, match="non-empty"):
        fit_input_norm(_mlp(), torch.zeros(3, 4))


def test_causal_lm_is_registered_and_reads_token_features() -> None:
    model = build_model(
        "causal_lm", {"dim": 16, "layers": 1, "heads": 2}, num_features=6, num_classes=10, seed=1
    )
    tokens = torch.tensor([[1, 2, 3, 4, 5, 9], [0, 0, 7, 7, 8, 8]])
    logits = model(tokens.float())
    assert logits.shape == (2, 6, 10)
    assert torch.equal(logits, model(tokens))
    again = build_model(
        "causal_lm", {"dim": 16, "layers": 1, "heads": 2}, num_features=6, num_classes=10, seed=1
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("bad", [[0.5, 1, 2], [-1, 1, 2], [10, 1, 2]])
def test_causal_lm_refuses_features_that_are_not_token_ids(bad: list[float]) -> None:
    model = build_model("causal_lm", {}, num_features=3, num_classes=10, seed=1)
    with pytest.raises(DataError, match=r"reads token ids, integers in \[0, 10\)"):
        model(torch.tensor([bad], dtype=torch.float32))


def test_causal_lm_rejects_unknown_arguments() -> None:
    with pytest.raises(ModelError, match="unknown argument 'width'"):
        build_model("causal_lm", {"width": 3}, num_features=3, num_classes=10, seed=1)


def test_each_family_owns_the_plans_it_declares() -> None:
    from baton.ml.families import FAMILIES, families_for, family, family_of
    from baton.ml.models import is_sequence_model
    from baton.ml.plans import PlanKind

    assert families_for(PlanKind.TP) == ("causal_lm", "mlp")
    assert families_for(PlanKind.DDP) == ("causal_lm", "cnn", "hf_causal_lm", "logreg", "mlp")
    shapes = {"mlp": (5, 3), "logreg": (5, 3), "causal_lm": (8, 16), "cnn": (16, 3)}
    for name, fam in FAMILIES.items():
        if name == "hf_causal_lm":
            continue  # built from a site's checkpoint: tests/unit/baton/test_llm_task.py
        features, classes = shapes[name]
        model = build_model(name, {}, num_features=features, num_classes=classes, seed=0)
        assert family_of(model) is fam
        assert is_sequence_model(model) is fam.sequence is (name == "causal_lm")
        splits = {PlanKind.TP, PlanKind.FSDP_TP} <= fam.plans
        assert (fam.tp_plan(model) is not None) is splits
        assert bool(fam.tp_degrees(model)) is splits
        assert bool(fam.pp_degrees(model)) is (PlanKind.PP in fam.plans)
    with pytest.raises(ModelError, match="belongs to no registered model family"):
        family_of(nn.Linear(2, 2))
    with pytest.raises(ModelError, match="is not a 'mlp' model"):
        family("mlp").tp_plan(nn.Linear(2, 2))
