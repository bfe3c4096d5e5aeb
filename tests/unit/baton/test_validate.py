"""A plan's model and parallel plan are checked at submit, with the registry's own reasons."""

from __future__ import annotations

import pytest

from baton.errors import ConfigError, ModelError
from baton.ml.models import build_model
from baton.ml.validate import check_model, meta_model
from baton.plan import RunPlan, parse_plan

PLAN = """
[run]
name = "p"
sites = ["a"]

[model]
name = "{name}"
args = {{ {args} }}

[task]
dataset = "wine"

[training]
parallel_plan = "{parallel}"
"""


def plan_of(name: str, args: str = "", parallel: str = "site") -> RunPlan:
    return parse_plan(PLAN.format(name=name, args=args, parallel=parallel))


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "mlp",
            'hidden = "wide"',
            "plan.toml: 'model.args.hidden': model argument 'hidden' must be a non-empty "
            "list of integers",
        ),
        (
            "mlp",
            "depth = 3",
            "plan.toml: 'model.args.depth': unknown argument 'depth' for model 'mlp'; "
            "known: hidden, dropout",
        ),
        (
            "mlp",
            "hidden = [8], dropout = 1",
            "plan.toml: 'model.args.dropout': model argument 'dropout' must be a number in [0, 1)",
        ),
        (
            "mlp",
            "hidden = [0]",
            "plan.toml: 'model.args.hidden': model argument 'hidden' must hold integers in "
            "[1, 65536]",
        ),
        (
            "logreg",
            "hidden = [8]",
            "plan.toml: 'model.args.hidden': unknown argument 'hidden' for model 'logreg'; "
            "known: none",
        ),
        (
            "causal_lm",
            "dim = 30",
            "plan.toml: 'model.args.dim': model width 30 does not divide into 4 heads",
        ),
        (
            "causal_lm",
            "layers = true",
            "plan.toml: 'model.args.layers': model argument 'layers' must be an integer in "
            "[1, 65536]",
        ),
        # Neither argument is wrong alone: the message names the table.
        (
            "causal_lm",
            "dim = 48, heads = 5",
            "plan.toml: 'model.args': model width 48 does not divide into 5 heads",
        ),
    ],
)
def test_a_bad_model_argument_is_refused_naming_its_key(name: str, args: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_model(plan_of(name, args), source="plan.toml")
    assert err.value.message == message


def test_an_unknown_model_is_refused_naming_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        check_model(plan_of("gpt"), source="plan.toml")
    assert err.value.message == (
        "plan.toml: 'model.name': unknown model 'gpt'; "
        "known: mlp, logreg, causal_lm, cnn, hf_causal_lm"
    )


def test_the_reason_is_the_registrys_own_whatever_the_data_width() -> None:
    # The check builds at placeholder widths; a site builds at its task's. Same verdict.
    args = {"hidden": [64, "wide"]}
    with pytest.raises(ModelError) as at_site:
        build_model("mlp", args, num_features=30, num_classes=3, seed=0)
    with pytest.raises(ConfigError) as at_submit:
        check_model(plan_of("mlp", 'hidden = [64, "wide"]'), source="p.toml")
    assert at_submit.value.message == f"p.toml: 'model.args.hidden': {at_site.value.message}"


@pytest.mark.parametrize(
    ("name", "args", "parallel", "message"),
    [
        (
            "logreg",
            "",
            "tp",
            "model 'logreg' cannot be trained under it; plan tp trains: causal_lm, mlp",
        ),
        (
            "logreg",
            "",
            "pp",
            "model 'logreg' cannot be trained under it; plan pp trains: causal_lm, mlp",
        ),
        (
            "causal_lm",
            "heads = 1",
            "tp",
            "model 'causal_lm' with these arguments splits no layer over 2 or more workers",
        ),
        (
            "mlp",
            "hidden = [1]",
            "fsdp_tp",
            "model 'mlp' with these arguments splits no layer over 2 or more workers",
        ),
        (
            "causal_lm",
            "layers = 1",
            "pp",
            "model 'causal_lm' with these arguments has 1 layer(s) to cut into stages; "
            "a pipeline needs 2 or more",
        ),
    ],
)
def test_a_parallel_plan_the_model_cannot_run_is_refused(
    name: str, args: str, parallel: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        check_model(plan_of(name, args, parallel), source="plan.toml")
    assert err.value.message == (
        f"plan.toml: 'training.parallel_plan' is {parallel!r}, but {message}"
    )


@pytest.mark.parametrize(
    ("name", "args", "parallel"),
    [
        ("logreg", "", "ddp"),
        ("logreg", "", "fsdp"),
        ("logreg", "", "auto"),  # the site picks a plan the family has
        ("logreg", "", "site"),
        ("causal_lm", "layers = 2", "pp"),
        ("causal_lm", "heads = 2, dim = 8", "fsdp_tp"),
        ("mlp", "hidden = [7]", "tp"),
    ],
)
def test_plans_a_site_can_run_pass(name: str, args: str, parallel: str) -> None:
    check_model(plan_of(name, args, parallel), source="plan.toml")


def test_the_check_allocates_no_weights() -> None:
    # About 51 GB of float32 weights if they were allocated.
    args = {"hidden": [65536, 65536, 65536, 65536]}
    model = meta_model("mlp", args)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 12 * 2**30
    check_model(plan_of("mlp", "hidden = [65536, 65536, 65536, 65536]", "tp"), source="p")
