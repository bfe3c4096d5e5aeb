"""The plan's primary metric: defaults keep older plans as they were; bad values are refused."""

from __future__ import annotations

import pytest

from baton.errors import ConfigError
from baton.plan import parse_plan

PLAN = '[run]\nname="p"\nsites=["a"]\n[model]\nname="logreg"\n[task]\ndataset="digits"\n'


def test_a_plan_without_a_metric_ranks_by_accuracy_higher_is_better() -> None:
    task = parse_plan(PLAN).task
    assert (task.metric, task.higher_is_better) == ("accuracy", True)


def test_a_lower_is_better_metric_loads_from_toml() -> None:
    task = parse_plan(PLAN + 'metric = "perplexity"\nhigher_is_better = false\n').task
    assert (task.metric, task.higher_is_better) == ("perplexity", False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('higher_is_better = "no"\n', "'task.higher_is_better' must be true or false"),
        ('metric = ""\n', "[task] 'metric' must be 1 to 64 letters, digits"),
        ('metric = "val acc"\n', "not 'val acc'"),
        ("metric = 3\n", "'task.metric' must be a string, not an integer"),
    ],
)
def test_bad_metric_values_are_refused_naming_the_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(PLAN + extra)
    assert message in err.value.message
