"""``baton lab --plan`` on a language-model plan: every order trained by the sites' own
trainer, ranked by perplexity, lower is better."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baton.errors import ConfigError
from baton.plan import parse_plan
from sim.lab.departments import write_lab_departments
from sim.lab.plan_cell import run_plan_cell
from sim.own_data import read_federation
from sim.simulate import simulate_sequential
from tests.unit.baton.test_llm_fixtures import lm_plan_text, make_base, make_site


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm-lab")
    base = make_base(root / "base")
    return {
        "s0": make_site(root / "s0", base, kind="cardio"),
        "s1": make_site(root / "s1", base, kind="generic"),
    }


@pytest.fixture(scope="module")
def measured(sites: dict[str, Path]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    text = lm_plan_text(sites["s0"] / "base", sites=2, steps=2)
    lines: list[str] = []
    records, meta = run_plan_cell(parse_plan(text), sites, repetitions=2, progress=lines.append)
    assert lines[0] == (
        "2 orders x 2 repetitions = 4 runs, one at a time with the sites' own trainer"
    )
    return text, records, meta


def test_orders_are_ranked_by_perplexity_lowest_best(
    sites: dict[str, Path], measured: tuple[str, list[dict[str, Any]], dict[str, Any]]
) -> None:
    text, records, meta = measured
    assert (meta["trainer"], meta["metric"], meta["higher_is_better"]) == (
        "sequential",
        "perplexity",
        False,
    )
    # Each order's score is the final model's perplexity on the pooled validation notes,
    # as the sites' own trainer reaches it with the repetition's seed.
    plan = parse_plan(text)
    federation = read_federation(plan, sites)
    means = {}
    for order in (("s0", "s1"), ("s1", "s0")):
        runs = [
            simulate_sequential(
                parse_plan(text.replace("seed = 7", f"seed = {seed}")), federation, [order]
            ).test_metrics["perplexity"]
            for seed in (7, 8)
        ]
        means[order] = float(np.mean(runs))
    better, worse = sorted(means, key=means.__getitem__)
    assert means[better] < means[worse]
    by_last = {row["site"]: row["mean"] for row in meta["by_last_site"]}
    assert by_last == pytest.approx({o[-1]: v for o, v in means.items()}, rel=1e-6)
    rows = {r["strategy"]: r for r in records}
    fixed = rows["fixed"]  # the plan's order, s0 then s1
    assert fixed["accuracy_mean"] == pytest.approx(means[("s0", "s1")], rel=1e-6)
    # Lower is better: the lower order ties the best (75th percentile, no regret), the
    # higher one is below it; read as higher-is-better it would be the other way round.
    if better == ("s0", "s1"):
        assert (fixed["percentile_mean"], fixed["regret_mean"]) == (75.0, pytest.approx(0.0))
        assert fixed["best_order_rate"] == 1.0
    else:
        assert fixed["percentile_mean"] == 25.0
        assert fixed["regret_mean"] == pytest.approx(means[worse] - means[better], rel=1e-6)
        assert fixed["best_order_rate"] == 0.0
    assert rows["fedavg"]["accuracy_mean"] > 1.0
    assert rows["fixed"]["centralized_accuracy"] > 1.0


def test_a_metric_the_task_does_not_compute_is_refused(sites: dict[str, Path]) -> None:
    text = lm_plan_text(sites["s0"] / "base", sites=2, steps=1)
    plan = parse_plan(text.replace('metric = "perplexity"', 'metric = "bleu"'))
    with pytest.raises(ConfigError, match="primary metric 'bleu' is not among the task's"):
        run_plan_cell(plan, sites, repetitions=1)


def test_the_department_recipe_refuses_unknown_departments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_lab_departments(tmp_path, ["cardiology", "dermatology"])
    assert str(caught.value) == (
        "give at least 2 distinct departments of cardiology, oncology, radiology, "
        "emergency; unknown: dermatology"
    )
