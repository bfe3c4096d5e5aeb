"""Tests for the lab with forgetting remedies: batched equivalence, grid options, records."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from baton.ml.step import make_optimizer
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from sim.lab.baselines import fedavg_accuracy
from sim.lab.batched import sgd_update, train_orders_batched
from sim.lab.grid import GRIDS, REMEDIES, Cell, Grid, Trial, lab_plan
from sim.lab.oracle import OrderScores
from sim.lab.report import markdown_table
from sim.lab.stats import paired_t_test
from sim.lab.summary import summarize
from sim.simulate import simulate_sequential
from sim.tasks import Federation, Partition, make_federation

SITES = ("site-0", "site-1", "site-2")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _plan(cycles: int = 2, **training: Any) -> RunPlan:
    return RunPlan(
        run=RunSection(name="t", sites=SITES, cycles=cycles, seed=5),
        model=ModelSection(name="mlp", args={"hidden": [16]}),
        task=TaskSection(dataset="digits"),
        training=TrainingSection(local_epochs=2, weight_decay=1e-3, **training),
    )


def _federation() -> Federation:
    return make_federation("digits", SITES, Partition(kind="dirichlet", alpha=0.5), seed=2)


@pytest.mark.parametrize(
    "remedies",
    [
        {"lr_schedule": "cyclical", "lr_min_ratio": 0.1},
        {"proximal_mu": 0.5},
        {"proportional_steps": True, "reference_examples": 120, "local_steps": 6},
        {"lr_schedule": "cyclical", "proximal_mu": 0.1, "logit_adjustment": False},
    ],
)
def test_batched_training_with_remedies_matches_the_sequential_simulation(
    remedies: dict[str, Any],
) -> None:
    plan, fed = _plan(**remedies), _federation()
    plain = _plan(**{k: v for k, v in remedies.items() if k == "local_steps"})
    orders = list(itertools.permutations(SITES))[:4]
    batched = train_orders_batched(plan, fed, orders)
    n_test = len(fed.test)
    for i, order in enumerate(orders):
        single = simulate_sequential(plan, fed, [order] * plan.run.cycles)
        # Equal up to float rounding: at most one of ~360 test predictions may flip.
        assert abs(batched.test[i] - single.test_metrics["accuracy"]) <= 1.0 / n_test + 1e-12
    # The remedy changes the outcome, so the agreement above is not the plain run's.
    assert not np.array_equal(batched.test, train_orders_batched(plain, fed, orders).test)


def test_fedavg_baseline_ignores_the_schedule_and_the_pull() -> None:
    plan, fed = _plan(cycles=1), _federation()
    remedied = _plan(cycles=1, lr_schedule="cyclical", proximal_mu=1.0)
    assert fedavg_accuracy(remedied, fed) == fedavg_accuracy(plan, fed)


def test_lab_plan_takes_the_reference_size_from_the_published_profiles() -> None:
    fed = _federation()
    grid = dataclasses.replace(GRIDS["smoke"], remedies={"proportional_steps": True})
    cell = GRIDS["smoke"].cells[0]
    plan = lab_plan(cell, grid, SITES, fed)
    sizes = [len(d.train) for d in fed.sites.values()]
    assert plan.training.proportional_steps
    assert plan.training.reference_examples == round(sum(sizes) / len(sizes))
    with pytest.raises(ValueError, match="published sizes"):
        lab_plan(cell, grid, SITES)
    plain = lab_plan(cell, GRIDS["smoke"], SITES)
    assert plain.training == dataclasses.replace(plain.training, proximal_mu=0.0)
    assert plain.training.lr_schedule == "constant"


def test_remedies_grids_turn_the_remedies_on() -> None:
    grid = GRIDS["reduced-remedies"]
    assert grid.cells == GRIDS["reduced"].cells
    plan = lab_plan(grid.cells[0], grid, SITES)
    for key, value in REMEDIES.items():
        assert getattr(plan.training, key) == value
    assert GRIDS["reduced"].remedies_label == "none"
    assert "proximal_mu=0.1" in grid.remedies_label
    assert "transfer_factor=5" in grid.remedies_label
    five = Cell(dataset="digits", partition=Partition(kind="iid"), k=3, local_epochs=5, cycles=3)
    assert grid.effective(five) == dataclasses.replace(five, local_epochs=1, cycles=15)
    one = dataclasses.replace(five, local_epochs=1)
    assert grid.effective(one) == one
    assert GRIDS["reduced"].effective(five) == five
    with pytest.raises(ValueError, match="transfer_factor"):
        Grid(name="x", cells=(), seeds=(0,), repetitions=1, transfer_factor=0)


def _trial(offset: float, strategy: float, fedavg: float) -> Trial:
    test = np.array([[0.70, 0.72], [0.80, 0.82]]) + offset  # two orders, two repetitions
    hops = np.zeros((2, 2, 2, 2))
    scores = OrderScores(
        orders=(("a", "b"), ("b", "a")),
        seeds=(0, 1),
        test=test,
        val=test,
        val_loss=1 - test,
        before=hops,
        after=hops,
    )
    return Trial(
        scores=scores,
        centralized=0.9,
        chosen={"learned": [strategy, strategy], "fedavg": [fedavg, fedavg]},
        best_hits={"learned": [True, False], "fedavg": [False, False]},
        extra_runs={"learned": 4, "fedavg": 0},
        decide_seconds={"learned": 0.5, "fedavg": 0.0},
        run_seconds=2.0,
    )


def test_records_carry_the_paired_tests_and_the_cost() -> None:
    cell = Cell(dataset="digits", partition=Partition(kind="iid"), k=2, local_epochs=1, cycles=1)
    trials = [_trial(0.0, 0.81, 0.74), _trial(0.02, 0.84, 0.75), _trial(0.01, 0.81, 0.79)]
    records = {r["strategy"]: r for r in summarize(cell, trials, remedies="x")}
    learned = records["learned"]
    random_order = [0.76, 0.78, 0.77]  # the mean over the orders of each trial
    accs = [0.81, 0.84, 0.81]
    assert learned["random_order_accuracy"] == pytest.approx(0.77)
    assert learned["gain_vs_random_pts"] == pytest.approx(100 * (np.mean(accs) - 0.77))
    assert learned["p_vs_random"] == pytest.approx(paired_t_test(accs, random_order).p_value)
    assert learned["p_vs_random"] < 0.05
    assert learned["p_vs_random_wilcoxon"] == pytest.approx(0.25)  # 3 pairs, all positive
    assert learned["vs_fedavg_pts"] == pytest.approx(
        100 * (np.mean(accs) - np.mean([0.74, 0.75, 0.79]))
    )
    assert learned["extra_runs"] == 4
    assert learned["extra_train_seconds"] == pytest.approx(8.0)
    assert learned["decide_seconds"] == pytest.approx(0.5)
    assert learned["remedies"] == "x"
    assert records["fedavg"]["vs_fedavg_pts"] == 0.0
    table = markdown_table(list(records.values()))
    assert f"| +5.0 ({learned['p_vs_random']:.3f}) |" in table
    assert "+remedies" in table


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 1e-3), (0.5, 0.0)])
def test_the_labs_sgd_update_is_the_site_optimizers_step(
    momentum: float, weight_decay: float
) -> None:
    gen = torch.Generator().manual_seed(0)
    by_hand = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, generator=gen)]
    stepped = [t.clone() for t in by_hand]
    optimizer = make_optimizer(
        stepped, name="sgd", lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    buffers: list[torch.Tensor] = []
    for _ in range(3):
        grads = [torch.randn(t.shape, generator=gen) for t in by_hand]
        for t, g in zip(stepped, grads, strict=True):
            t.grad = g.clone()
        optimizer.step()
        sgd_update(by_hand, grads, buffers, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for mine, theirs in zip(by_hand, stepped, strict=True):
        assert torch.equal(mine, theirs)
    assert not torch.equal(
        by_hand[0], torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    )
