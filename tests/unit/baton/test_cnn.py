"""The ``cnn`` family: image shapes from its arguments and the inputs, its plans, its checks."""

from __future__ import annotations

import pytest
import torch

from baton.errors import ConfigError, ModelError
from baton.ml.families import families_for, family, family_of
from baton.ml.families.cnn import CNN, image_shape
from baton.ml.models import build_model
from baton.ml.norm import fit_input_norm, input_norm_of
from baton.ml.plans import PlanKind
from baton.ml.validate import check_model
from baton.plan import parse_plan

PLAN = """
[run]
name = "scans"
seed = 1
sites = ["a", "b"]

[model]
name = "cnn"
args = {ARGS}

[task]
dataset = "image_folder"

[training]
parallel_plan = "{PLAN}"
"""


def _cnn(args: dict[str, object], features: int, classes: int = 10) -> CNN:
    model = build_model("cnn", args, num_features=features, num_classes=classes, seed=0)
    assert isinstance(model, CNN)
    return model


@pytest.mark.parametrize(
    ("args", "features", "image"),
    [
        ({}, 64, (1, 8, 8)),  # square grayscale by default
        ({"in_channels": 3}, 3 * 16 * 16, (3, 16, 16)),
        ({"height": 4}, 4 * 6, (1, 4, 6)),
        ({"width": 4, "in_channels": 3}, 3 * 2 * 4, (3, 2, 4)),
        ({"height": 2, "width": 5}, 10, (1, 2, 5)),
    ],
)
def test_the_image_shape_comes_from_the_arguments_and_the_inputs(
    args: dict[str, object], features: int, image: tuple[int, int, int]
) -> None:
    assert image_shape(args, features) == image
    model = _cnn(args, features, classes=4)
    assert model.image == image
    logits = model(torch.rand(5, features))
    assert logits.shape == (5, 4)


def test_the_model_is_norm_then_conv_blocks_then_pool_and_head() -> None:
    model = _cnn({"channels": [4, 6, 8]}, 64, classes=3)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 6), (6, 8)]
    assert (model.head.in_features, model.head.out_features) == (8, 3)
    assert input_norm_of(model).mean.shape == (64,)
    # Five blocks shrink an 8x8 image to 1x1 and keep it there: any depth fits.
    assert _cnn({"channels": [2] * 5}, 64)(torch.rand(2, 64)).shape == (2, 10)


def test_the_first_sites_pixel_statistics_normalize_the_inputs() -> None:
    model = _cnn({}, 16, classes=2)
    x = torch.rand(30, 16) * 0.5 + 0.25
    assert fit_input_norm(model, x)
    norm = input_norm_of(model)
    torch.testing.assert_close(norm.mean, x.mean(dim=0))
    assert not fit_input_norm(model, torch.rand(4, 16))  # later sites keep them


def test_the_weights_are_drawn_from_the_seed() -> None:
    one, two = _cnn({}, 64), _cnn({}, 64)
    other = build_model("cnn", {}, num_features=64, num_classes=10, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters(), strict=True))
    assert not torch.equal(one.head.weight, other.get_parameter("head.weight"))


@pytest.mark.parametrize(
    ("args", "features", "message"),
    [
        (
            {},
            60,
            "model 'cnn' reads 1x7x7 images (channels x height x width), which do not "
            "make the task's 60 inputs",
        ),
        ({"in_channels": 3}, 64, "reads 3x4x4 images"),
        ({"height": 5}, 64, "reads 1x5x12 images"),
        ({"height": 4, "width": 4}, 64, "reads 1x4x4 images"),
        ({"width": 100}, 64, "reads 1-channel images"),
        ({"channels": []}, 64, "'channels' must be a non-empty list of integers"),
        ({"channels": [8, 0]}, 64, "'channels' must hold integers in [1, 65536]"),
        ({"height": 2.5}, 64, "'height' must be an integer in [1, 65536]"),
        ({"in_channels": True}, 64, "'in_channels' must be an integer in [1, 65536]"),
        ({"kernel": 3}, 64, "unknown argument 'kernel' for model 'cnn'"),
    ],
)
def test_bad_arguments_and_shapes_are_refused(
    args: dict[str, object], features: int, message: str
) -> None:
    with pytest.raises(ModelError) as err:
        _cnn(args, features)
    assert message in err.value.message


def test_it_trains_single_or_ddp_only_and_owns_its_models() -> None:
    cnn = family("cnn")
    assert cnn.plans == frozenset({PlanKind.SINGLE, PlanKind.DDP})
    assert "cnn" in families_for(PlanKind.DDP)
    assert "cnn" not in families_for(PlanKind.FSDP)
    assert "cnn" not in families_for(PlanKind.TP)
    model = _cnn({}, 64)
    assert family_of(model) is cnn
    assert cnn.tp_plan(model) is None
    assert cnn.tp_degrees(model) == ()
    assert cnn.pp_degrees(model) == ()
    # Conv outputs 8 x 8x8 and 16 x 4x4, head 10: two float32 values each, per example.
    assert cnn.activation_bytes(model, batch=2, example_shape=(64,)) == 4 * 2 * 2 * 778


def _check(args: str, plan: str = "single") -> None:
    check_model(parse_plan(PLAN.replace("{ARGS}", args).replace("{PLAN}", plan)), source="p")


def test_a_plan_is_checked_at_submit_without_the_tasks_inputs() -> None:
    # The inputs are unknown at submit: a shape for any task passes, bad arguments do not.
    _check("{ channels = [8, 16], in_channels = 3, height = 32, width = 24 }", "ddp")
    _check("{}")
    with pytest.raises(ConfigError, match=r"'model.args.height': .*must be an integer"):
        _check('{ height = "tall" }')
    with pytest.raises(ConfigError, match=r"'model.args.channels': .*non-empty list"):
        _check("{ channels = [] }")
    with pytest.raises(ConfigError, match=r"'training.parallel_plan' is 'fsdp', but model 'cnn'"):
        _check("{}", "fsdp")
