"""The lab ranks by the run's primary metric and its direction, and refuses what it cannot score."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import pytest

from baton.errors import ConfigError
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from ordering import HopOutcome, make_strategy
from sim.lab.baselines import centralized_accuracy, fedavg_accuracy
from sim.lab.cells import Cell
from sim.lab.grid import Trial, trial_of
from sim.lab.oracle import evaluate_orders
from sim.lab.plan_cell import check_plan
from sim.lab.report import markdown_table
from sim.lab.runner import context_for, strategy_schedule
from sim.lab.summary import summarize
from sim.tasks import Partition, make_federation
from tests.unit.baton.test_lab_remedies import _trial as remedies_trial

SITES = ("site-0", "site-1", "site-2")
PERPLEXITY = TaskSection(dataset="digits", metric="perplexity", higher_is_better=False)


def _plan(task: TaskSection = PERPLEXITY, cycles: int = 2) -> RunPlan:
    return RunPlan(
        run=RunSection(name="lm", sites=SITES, cycles=cycles, seed=5),
        model=ModelSection(name="mlp", args={"hidden": [8]}),
        task=task,
        training=TrainingSection(local_epochs=1),
    )


def _trial(higher_is_better: bool) -> Trial:
    """Two orders over two repetitions, means 0.71 for ("a", "b") and 0.81 for ("b", "a");
    the strategy reaches 0.71, FedAvg 0.74, pooled training 0.9 (read as perplexities)."""
    trial = remedies_trial(0.0, strategy=0.71, fedavg=0.74)
    return dataclasses.replace(trial, metric="perplexity", higher_is_better=higher_is_better)


def test_a_lower_is_better_metric_ranks_the_lowest_value_best() -> None:
    cell = Cell(dataset="lm", partition=Partition(kind="iid"), k=2, local_epochs=1, cycles=1)
    lower = {r["strategy"]: r for r in summarize(cell, [_trial(False)])}["learned"]
    assert (lower["metric"], lower["higher_is_better"]) == ("perplexity", False)
    assert lower["accuracy_mean"] == pytest.approx(0.71)  # the metric's own value
    assert lower["percentile_mean"] == 75.0  # ties the better order, above the worse
    assert lower["regret_mean"] == pytest.approx(0.0)
    assert lower["gain_vs_random_pts"] == pytest.approx(5.0)  # 0.76 -> 0.71, better
    assert lower["vs_fedavg_pts"] == pytest.approx(3.0)
    assert lower["pct_of_centralized"] == pytest.approx(100 * 0.9 / 0.71)
    assert lower["loo_oracle_percentile"] == 75.0  # the oracle picks the lower order
    # The same numbers read as higher-is-better rank the other way.
    higher = {r["strategy"]: r for r in summarize(cell, [_trial(True)])}["learned"]
    assert higher["percentile_mean"] == 25.0
    assert higher["regret_mean"] == pytest.approx(0.1)
    assert higher["gain_vs_random_pts"] == pytest.approx(-5.0)
    table = markdown_table([lower, higher])
    assert "| lm iid-0.5 K=2 e=1 c=1 by perplexity (lower is better) | learned | 75.0 " in table
    assert "| lm iid-0.5 K=2 e=1 c=1 by perplexity | learned | 25.0 " in table


def test_the_strategies_see_the_plans_metric_and_direction() -> None:
    ctx = context_for(SITES, {}, (), cycle=0, seed=1, metric="perplexity", higher_is_better=False)
    assert (ctx.metric, ctx.higher_is_better) == ("perplexity", False)
    fed = make_federation("digits", SITES, Partition(kind="iid"), seed=1)
    values = {"site-0": 9.0, "site-1": 30.0, "site-2": 4.0}

    def history(schedule: tuple[tuple[str, ...], ...]) -> list[HopOutcome]:
        return [
            HopOutcome(cycle=c, site_id=s, metrics_before={"perplexity": values[s]})
            for c, order in enumerate(schedule)
            for s in order
        ]

    greedy = make_strategy("greedy_loss", {"direction": "hardest_last"})
    schedule = strategy_schedule(greedy, _plan(cycles=3), fed, history=history)
    # Cycle 1 misses the last hop of cycle 0 (site-2, counted hardest); cycle 2 sees all.
    assert schedule[1:] == (("site-0", "site-1", "site-2"), ("site-2", "site-0", "site-1"))
    upside_down = _plan(dataclasses.replace(PERPLEXITY, higher_is_better=True), cycles=3)
    flipped = strategy_schedule(greedy, upside_down, fed, history=history)
    assert flipped[2] == ("site-1", "site-0", "site-2")


def test_the_fast_paths_refuse_a_metric_they_cannot_compute() -> None:
    plan = _plan()
    check_plan(plan)  # the lab's plan cell trains it one run at a time instead
    nothing = cast(Any, None)  # refused before the data is touched
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: evaluate_orders(plan, nothing, [SITES], [0]), "the ordering lab's oracle"),
        (lambda: centralized_accuracy(plan, nothing), "the centralized baseline"),
        (lambda: fedavg_accuracy(plan, nothing), "the FedAvg baseline"),
        (lambda: trial_of(plan, nothing, cast(Any, None), seed=0), "the ordering lab"),
    ]
    for call, what in calls:
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.message.startswith(f"{what} scores runs by 'accuracy' only"), what
        assert "'perplexity', lower is better" in err.value.message
