"""``baton submit`` refuses a plan whose primary metric is not its installed task's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from baton import exit_codes
from baton.errors import ConfigError
from baton.plan import parse_plan
from owner.plan_metric import check_primary_metric

PLAN = """
[run]
name = "ranked"
sites = ["site-a"]

[model]
name = "logreg"

[task]
dataset = "wine"
{metric}
[ordering]
strategy = "fixed"
"""
TWO_LINES = (
    'write these two lines under [task]:\n    metric = "accuracy"\n    higher_is_better = true'
)


def test_a_plan_that_keeps_the_defaults_or_states_them_passes() -> None:
    for metric in ("", 'metric = "accuracy"\nhigher_is_better = true\n'):
        check_primary_metric(parse_plan(PLAN.format(metric=metric)).task, source="plan.toml")


@pytest.mark.parametrize(
    ("metric", "said"),
    [
        ('metric = "perplexity"\nhigher_is_better = false\n', "'perplexity' (lower is better)"),
        ("higher_is_better = false\n", "'accuracy' (lower is better)"),
        ('metric = "loss"\n', "'loss' (higher is better)"),
    ],
)
def test_another_metric_or_direction_is_refused_with_the_lines_to_write(
    metric: str, said: str
) -> None:
    with pytest.raises(ConfigError) as err:
        check_primary_metric(parse_plan(PLAN.format(metric=metric)).task, source="plan.toml")
    assert err.value.message == (
        "plan.toml: task 'wine' ranks models by 'accuracy' (higher is better), but the "
        f"plan's [task] says {said}; {TWO_LINES}"
    )


def test_submit_refuses_it_before_any_round_trip(tmp_path: Path) -> None:
    from owner.cli import app

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(metric='metric = "perplexity"\nhigher_is_better = false\n'))
    result = CliRunner(env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}).invoke(
        app, ["submit", str(plan), "--admin", str(tmp_path / "absent.toml")]
    )
    assert result.exit_code == exit_codes.CLI_CONFIG, result.output
    assert 'metric = "accuracy"' in result.output
    assert "higher_is_better = true" in result.output
