"""Run plans: valid plans load; every kind of bad plan gets an error naming the key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.errors import ConfigError
from baton.ml.models import known_models
from baton.ml.tasks import known_tasks
from baton.plan import check_names, load_plan, parse_plan
from ordering import known_strategies
from sim.tasks import known_datasets

PLAN = """
[run]
name = "p"
sites = ["a", "b"]
cycles = 2
seed = 7

[model]
name = "mlp"
args = { hidden = [8, 4] }

[task]
dataset = "wine"

[ordering]
strategy = "random"

[training]
optimizer = "adam"
lr = 1
local_steps = 5
"""


def test_valid_plan_round_trips_every_section() -> None:
    plan = parse_plan(PLAN)
    assert plan.run.sites == ("a", "b")
    assert (plan.run.cycles, plan.run.seed, plan.total_hops) == (2, 7, 4)
    assert plan.model.args == {"hidden": [8, 4]}
    assert plan.task.dataset == "wine"
    assert plan.ordering.strategy == "random"
    assert plan.training.lr == 1.0
    assert isinstance(plan.training.lr, float)
    assert plan.training.local_steps == 5


def test_a_start_model_is_pinned_by_its_files_hash_and_is_off_by_default() -> None:
    assert parse_plan(PLAN).model.start_from == ""
    pin = "sha256:" + "0123456789abcdef" * 4
    text = PLAN.replace('name = "mlp"', f'name = "mlp"\nstart_from = "{pin}"')
    assert parse_plan(text).model.start_from == pin


def test_defaults_fill_optional_sections() -> None:
    plan = parse_plan(
        '[run]\nname="p"\nsites=["a"]\n[model]\nname="logreg"\n[task]\ndataset="digits"\n'
    )
    assert plan.ordering.strategy == "learned"
    assert plan.training.optimizer == "sgd"
    assert plan.run.cycles == 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "lr = 1",
            "lr = 1\nmomentun = 0.9",
            "<plan>: unknown key 'training.momentun' in [training]",
        ),
        ("cycles = 2", 'cycles = "2"', "<plan>: 'run.cycles' must be an integer, not a string"),
        ("cycles = 2", "cycles = 0", "'cycles' must be in [1, 1000], not 0"),
        ('sites = ["a", "b"]', 'sites = ["a", "a"]', "'sites' names a site twice"),
        ('sites = ["a", "b"]', 'sites = ["A b"]', "site id 'A b' is invalid"),
        ('optimizer = "adam"', 'optimizer = "lbfgs"', "'optimizer' must be 'sgd' or 'adam'"),
        ('[task]\ndataset = "wine"\n', "", "missing required key 'task'"),
        ("lr = 1", "lr = true", "'training.lr' must be a number, not a boolean"),
        (
            "lr = 1",
            "lr = 1\nproportional_steps = true",
            "'proportional_steps' needs 'reference_examples'",
        ),
        (
            "lr = 1",
            "lr = 1\nreference_examples = -1",
            "'reference_examples' must be in [0, 1000000000], not -1",
        ),
        (
            "lr = 1",
            'lr = 1\nlr_schedule = "cosine"',
            "'lr_schedule' must be 'constant' or 'cyclical', not 'cosine'",
        ),
        ("lr = 1", "lr = 1\nlr_min_ratio = 0", "'lr_min_ratio' must be in (0, 1], not 0"),
        ("lr = 1", "lr = 1\nlr_min_ratio = 1.5", "'lr_min_ratio' must be in (0, 1], not 1.5"),
        ("lr = 1", "lr = 1\ncycle_decay = 0", "'cycle_decay' must be in (0, 1], not 0"),
        ("lr = 1", "lr = 1\ncycle_decay = 1.5", "'cycle_decay' must be in (0, 1], not 1.5"),
        ("lr = 1", "lr = 1\nproximal_mu = -0.1", "'proximal_mu' must be in [0, 1000], not -0.1"),
        ("lr = 1", "lr = 1\nproximal_mu = inf", "'proximal_mu' must be in [0, 1000], not inf"),
        ('name = "p"', "name = ", "malformed TOML"),
        (
            'name = "mlp"',
            'name = "mlp"\nstart_from = "' + "a" * 64 + '"',
            "'start_from' must be 'sha256:' and 64 lower-case hex digits, not 'aaaa",
        ),
        (
            'name = "mlp"',
            'name = "mlp"\nstart_from = "sha256:' + "A" * 64 + '"',
            "'start_from' must be 'sha256:' and 64 lower-case hex digits",
        ),
    ],
)
def test_bad_plans_are_refused_with_a_precise_message(old: str, new: str, message: str) -> None:
    assert old in PLAN
    with pytest.raises(ConfigError) as err:
        parse_plan(PLAN.replace(old, new, 1))
    assert message in err.value.message


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ("lr = inf", "'lr' must be in (0, 10], not inf"),
        ("lr = nan", "'lr' must be in (0, 10], not nan"),
        ("lr = 1\nmomentum = -0.5", "'momentum' must be in [0, 1), not -0.5"),
        ("lr = 1\nmomentum = 1", "'momentum' must be in [0, 1), not 1.0"),
        ("lr = 1\nmomentum = nan", "'momentum' must be in [0, 1), not nan"),
        ("lr = 1\nweight_decay = -0.01", "'weight_decay' must be in [0, 1], not -0.01"),
        ("lr = 1\nweight_decay = inf", "'weight_decay' must be in [0, 1], not inf"),
        (
            'lr = 1\nparallel_plan = "ddp"\nproximal_mu = 0.1',
            "'parallel_plan' 'ddp' has no proximal penalty: set 'proximal_mu' to 0 or "
            "'parallel_plan' to 'single'",
        ),
        (
            'lr = 1\nparallel_plan = "auto"\nweight_decay = 0.01',
            "'parallel_plan' 'auto' runs 'adam' only without weight decay: set "
            "'weight_decay' to 0, 'optimizer' to 'sgd' or 'parallel_plan' to 'single'",
        ),
    ],
)
def test_training_values_that_would_fail_at_hop_0_are_refused(training: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(PLAN.replace("lr = 1", training, 1), source="plan.toml")
    assert err.value.message == f"plan.toml: [training] {message}"


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ("lr = 1e300", "'lr' must be in (0, 10], not 1e+300"),
        ("lr = 0", "'lr' must be in (0, 10], not 0.0"),
        ("lr = 10.5", "'lr' must be in (0, 10], not 10.5"),
        ("lr = 1\nmomentum = -5", "'momentum' must be in [0, 1), not -5.0"),
        ("lr = 1\nweight_decay = 1.5", "'weight_decay' must be in [0, 1], not 1.5"),
        ("lr = 1\nbatch_size = 0", "'batch_size' must be in [1, 65536], not 0"),
        ("lr = 1\nbatch_size = 65537", "'batch_size' must be in [1, 65536], not 65537"),
        (
            "lr = 1\nlocal_epochs = -1\nlocal_steps = 5",
            "'local_epochs' must be in [0, 1000], not -1",
        ),
        ("lr = 1\nlocal_epochs = 1001", "'local_epochs' must be in [0, 1000], not 1001"),
        ("lr = 1\nlocal_steps = -1", "'local_steps' must be in [0, 10000000], not -1"),
        ("lr = 1\nlocal_steps = 10000001", "'local_steps' must be in [0, 10000000], not 10000001"),
        (
            "lr = 1\nreference_examples = 1000000001",
            "'reference_examples' must be in [0, 1000000000], not 1000000001",
        ),
        ("lr = 1\nlr_min_ratio = nan", "'lr_min_ratio' must be in (0, 1], not nan"),
        ("lr = 1\ncycle_decay = -1", "'cycle_decay' must be in (0, 1], not -1.0"),
        ("lr = 1\nproximal_mu = 1000.5", "'proximal_mu' must be in [0, 1000], not 1000.5"),
    ],
)
def test_every_numeric_training_value_is_bounded_at_parse(training: str, message: str) -> None:
    text = PLAN.replace("local_steps = 5", "", 1).replace("lr = 1", training, 1)
    with pytest.raises(ConfigError) as err:
        parse_plan(text, source="plan.toml")
    assert err.value.message == f"plan.toml: [training] {message}"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("cycles = 2", "cycles = 1001", "'cycles' must be in [1, 1000], not 1001"),
        ("cycles = 2", "cycles = -3", "'cycles' must be in [1, 1000], not -3"),
        ("seed = 7", "seed = -1", "'seed' must be in [0, 9223372036854775808), not -1"),
        ("seed = 7", "seed = 9223372036854775807", ""),
    ],
)
def test_run_cycles_and_seed_are_bounded_at_parse(old: str, new: str, message: str) -> None:
    text = PLAN.replace(old, new, 1)
    if not message:
        assert parse_plan(text).run.seed == 2**63 - 1
        return
    with pytest.raises(ConfigError) as err:
        parse_plan(text, source="plan.toml")
    assert err.value.message == f"plan.toml: [run] {message}"


def test_the_edges_of_every_training_range_are_accepted() -> None:
    training = parse_plan(
        PLAN.replace("local_steps = 5", "", 1).replace(
            "lr = 1",
            "lr = 10\nmomentum = 0\nweight_decay = 1\nbatch_size = 65536\n"
            "local_epochs = 1000\nlocal_steps = 10000000\nreference_examples = 1000000000\n"
            "lr_min_ratio = 1\ncycle_decay = 1\nproximal_mu = 1000",
            1,
        )
    ).training
    assert (training.lr, training.batch_size, training.local_steps) == (10, 65536, 10_000_000)
    assert (training.proximal_mu, training.weight_decay) == (1000, 1)


@pytest.mark.parametrize("parallel_plan", ["site", "single"])
def test_a_plan_left_to_the_sites_or_single_may_use_every_remedy(parallel_plan: str) -> None:
    training = parse_plan(
        PLAN.replace(
            "lr = 1",
            f'lr = 1\nparallel_plan = "{parallel_plan}"\nproximal_mu = 0.1\nweight_decay = 0.01',
            1,
        )
    ).training
    assert (training.parallel_plan, training.proximal_mu) == (parallel_plan, 0.1)
    assert (training.optimizer, training.weight_decay) == ("adam", 0.01)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'name = "mlp"',
            'name = "gpt"',
            "<plan>: unknown model 'gpt' in 'model.name'; "
            "known: causal_lm, cnn, hf_causal_lm, logreg, mlp",
        ),
        (
            'dataset = "wine"',
            'dataset = "imagenet"',
            "unknown dataset 'imagenet' in 'task.dataset'",
        ),
        ('strategy = "random"', 'strategy = "best"', "unknown ordering strategy 'best'"),
    ],
)
def test_names_are_checked_against_the_registries_the_caller_owns(
    old: str, new: str, message: str
) -> None:
    plan = parse_plan(PLAN.replace(old, new, 1))  # the plan alone knows no registry
    registries = {
        "models": known_models(),
        "datasets": known_tasks(),
        "strategies": known_strategies(),
    }
    with pytest.raises(ConfigError) as err:
        check_names(plan, source="<plan>", **registries)
    assert message in err.value.message
    check_names(plan, source="<plan>")  # a registry not given is not checked


def test_installed_tasks_are_the_built_in_and_the_simulations_toy_tasks() -> None:
    built_in = {"tabular", "image_folder", "causal_lm_finetune"}
    assert known_tasks() == tuple(sorted({*built_in, *known_datasets()}))


def test_forgetting_remedies_are_off_by_default_and_load_from_toml() -> None:
    default = parse_plan(PLAN).training
    assert (default.proportional_steps, default.reference_examples) == (False, 0)
    assert (default.lr_schedule, default.proximal_mu) == ("constant", 0.0)
    assert default.cycle_decay == 1.0
    remedies = (
        "lr = 1\nproportional_steps = true\nreference_examples = 120\n"
        'lr_schedule = "cyclical"\nlr_min_ratio = 0.2\nproximal_mu = 0.5\n'
        "cycle_decay = 0.8"
    )
    training = parse_plan(PLAN.replace("lr = 1", remedies, 1)).training
    assert training.proportional_steps
    assert training.reference_examples == 120
    assert (training.lr_schedule, training.lr_min_ratio) == ("cyclical", 0.2)
    assert training.proximal_mu == 0.5
    assert training.cycle_decay == 0.8


def test_load_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.replace("lr = 1", "lr = 1\nbogus = 2"))
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    assert err.value.message.startswith(f"{path}: unknown key 'training.bogus'")
    with pytest.raises(ConfigError, match="plan file not found"):
        load_plan(tmp_path / "missing.toml")
