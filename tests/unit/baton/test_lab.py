"""Tests for the ordering lab: oracle, statistics, batched trainer, baselines, the grid."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from ordering import HopOutcome, LearnedOrder
from sim.cli import register
from sim.lab.baselines import fedavg_accuracy
from sim.lab.batched import (
    HOP_METRICS,
    OrderAccuracies,
    pooled_val,
    supports_batched,
    train_orders_batched,
    train_schedules_batched,
)
from sim.lab.grid import OracleProber, TrialRuns
from sim.lab.oracle import (
    candidate_orders,
    ci95,
    evaluate_orders,
    expected_range,
    leave_one_out_oracle,
    order_effect,
    percentile_of,
    pooled_metrics,
    t_critical_975,
)
from sim.lab.report import REQUIRED_KEYS
from sim.lab.runner import context_for, gather_probes, outcomes_of, simulated_history
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


def _plan(cycles: int = 2, **training: object) -> RunPlan:
    defaults: dict[str, object] = {"local_epochs": 2, "weight_decay": 1e-3}
    defaults.update(training)
    return RunPlan(
        run=RunSection(name="t", sites=SITES, cycles=cycles, seed=5),
        model=ModelSection(name="mlp", args={"hidden": [16]}),
        task=TaskSection(dataset="digits"),
        training=TrainingSection(**defaults),  # type: ignore[arg-type]
    )


def _federation(sites: tuple[str, ...] = SITES) -> Federation:
    return make_federation("digits", sites, Partition(kind="dirichlet", alpha=0.5), seed=2)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_oracle_enumerates_every_order_for_small_k(k: int) -> None:
    sites = tuple(f"s{i}" for i in range(k))
    orders = candidate_orders(sites)
    assert len(orders) == math.factorial(k)
    assert set(orders) == set(itertools.permutations(sites))


def test_oracle_samples_720_distinct_orders_uniformly_for_seven_sites() -> None:
    sites = tuple(f"s{i}" for i in range(7))
    orders = candidate_orders(sites, seed=3)
    assert len(orders) == len(set(orders)) == 720
    assert all(sorted(o) == sorted(sites) for o in orders)
    assert candidate_orders(sites, seed=3) == orders
    assert candidate_orders(sites, seed=4) != orders
    # Uniform: each site is last in ~1/7 of the orders (chi-square, 6 dof, 0.1% level).
    last = Counter(o[-1] for o in orders)
    expected = 720 / 7
    assert sum((n - expected) ** 2 / expected for n in last.values()) < 22.46


def test_percentile_counts_ties_as_half() -> None:
    population = [0.1, 0.2, 0.2, 0.4]
    assert percentile_of(0.2, population) == pytest.approx(50.0)
    assert percentile_of(0.4, population) == pytest.approx(87.5)
    assert percentile_of(0.5, population) == pytest.approx(100.0)
    assert percentile_of(0.0, population) == pytest.approx(0.0)


def test_statistics_match_hand_computations() -> None:
    assert expected_range(2) == pytest.approx(2 / math.sqrt(math.pi), rel=1e-6)
    assert expected_range(1) == 0.0
    assert t_critical_975(1) == pytest.approx(12.706)
    assert t_critical_975(40) == pytest.approx(2.021, abs=1e-3)
    lo, hi = ci95([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0)
    assert (hi - lo) / 2 == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert all(math.isnan(v) for v in ci95([1.0]))
    # Two orders 0.10 apart, repetitions +-0.01 around each in opposite directions.
    table = np.array([[0.49, 0.51], [0.61, 0.59]])
    effect = order_effect(table)
    # Residuals +-0.01 on 1 degree of freedom: 0.0004, so 0.0002 in a 2-repetition mean.
    assert effect.order_sd == pytest.approx(math.sqrt(0.005 - 0.0002))
    noise_sd = math.sqrt(0.0002)
    assert effect.gap == pytest.approx(0.10)
    assert effect.noise_sd == pytest.approx(noise_sd)
    assert effect.ratio == pytest.approx(math.sqrt(0.0048) / noise_sd)
    assert effect.noise_gap == pytest.approx(math.sqrt(0.0002) * 2 / math.sqrt(math.pi), rel=1e-6)
    assert math.isnan(order_effect(table[:, :1]).ratio)
    # A shift shared by every order in a repetition (its seed) is not noise in the means.
    shifted = np.array([[0.49, 0.51], [0.59, 0.61]])
    assert order_effect(shifted).order_sd == pytest.approx(math.sqrt(0.005))
    # Where order does nothing the ratio is near 0, not 1: no cell counts as a win.
    flat = np.random.default_rng(0).normal(0.8, 0.02, size=(120, 4))
    assert order_effect(flat).ratio < 0.3


def test_leave_one_out_oracle_picks_by_the_other_repetitions() -> None:
    # Order 1 is best on average, but repetition 2 alone favours order 0.
    table = np.array(
        [
            [0.80, 0.80, 0.99],
            [0.90, 0.90, 0.85],
            [0.70, 0.70, 0.70],
        ]
    )
    # Repetitions 0 and 1 see the others' means (0.895, 0.875, 0.70) and pick order 0,
    # which scores 0.80 there; repetition 2 sees (0.80, 0.90, 0.70) and picks order 1,
    # which scores 0.85 there.
    pct, best_rate = leave_one_out_oracle(table)
    assert best_rate == pytest.approx(1 / 3)
    means = table.mean(axis=1)
    assert pct == pytest.approx(percentile_of((0.80 + 0.80 + 0.85) / 3, means))
    # A clear order effect over little noise is reproducible: always the best order.
    clear = np.array([[0.70, 0.71, 0.69], [0.90, 0.91, 0.89], [0.80, 0.79, 0.81]])
    assert leave_one_out_oracle(clear) == pytest.approx((100 * 2.5 / 3, 1.0))
    assert all(math.isnan(v) for v in leave_one_out_oracle(table[:, :1]))


@pytest.mark.parametrize("logit_adjustment", [False, True])
def test_batched_training_matches_the_sequential_simulation(logit_adjustment: bool) -> None:
    plan, fed = _plan(logit_adjustment=logit_adjustment), _federation()
    orders = list(itertools.permutations(SITES))[:4]
    batched = train_orders_batched(plan, fed, orders)
    n_test = len(fed.test)
    for i, order in enumerate(orders):
        single = simulate_sequential(plan, fed, [order] * plan.run.cycles)
        # Equal up to float rounding: at most one of ~360 test predictions may flip.
        assert abs(batched.test[i] - single.test_metrics["accuracy"]) <= 1.0 / n_test + 1e-12
    assert len(set(batched.test.tolist())) > 1  # the orders really differ


def test_evaluate_orders_batched_equals_one_by_one() -> None:
    plan, fed = _plan(cycles=1), _federation()
    orders = list(itertools.permutations(SITES))
    fast = evaluate_orders(plan, fed, orders, [0, 1])
    slow = evaluate_orders(plan, fed, orders, [0, 1], batched=False)
    np.testing.assert_allclose(fast.test, slow.test, atol=1.5 / len(fed.test))
    np.testing.assert_allclose(fast.val, slow.val, atol=1.5 / 100)
    assert not np.array_equal(fast.test[:, 0], fast.test[:, 1])  # repetitions differ


def _assert_hops_match(acc: OrderAccuracies, i: int, hops: tuple[HopOutcome, ...]) -> None:
    for h, hop in enumerate(hops):
        for j, metric in enumerate(HOP_METRICS):
            tolerance = 1.5 / hop.metrics_before["num_examples"] if metric == "accuracy" else 1e-4
            assert acc.before[i, h, j] == pytest.approx(hop.metrics_before[metric], abs=tolerance)
            assert acc.after[i, h, j] == pytest.approx(hop.metrics_after[metric], abs=tolerance)


def test_batched_schedules_match_the_simulation_hop_by_hop() -> None:
    plan, fed = _plan(cycles=2, proximal_mu=0.1, lr_schedule="cyclical"), _federation()
    a, b, c = SITES
    schedules = [((a, b, c), (c, a, b)), ((a, b, c), (a, b, c)), ((b, a, c), (c, b, a))]
    acc = train_schedules_batched(plan, fed, schedules)
    history = simulated_history(plan, fed)
    for i, schedule in enumerate(schedules):
        single = simulate_sequential(plan, fed, schedule)
        assert abs(acc.test[i] - single.test_metrics["accuracy"]) <= 1.5 / len(fed.test)
        _assert_hops_match(acc, i, tuple(history(schedule)))
    # Before any training the model is the same for all, and so is what the first site sees.
    assert acc.before[0, 0, 1] == acc.before[1, 0, 1]
    assert acc.before[0, 0, 1] != acc.before[2, 0, 1]  # ... another first site another loss


def test_runs_sharing_a_prefix_train_as_if_alone() -> None:
    plan, fed = _plan(cycles=2), _federation()
    a, b, c = SITES
    together = train_schedules_batched(
        plan, fed, [((a, b, c), (a, b, c)), ((a, b, c), (b, a, c)), ((a, c, b), (a, c, b))]
    )
    alone = train_schedules_batched(plan, fed, [((a, b, c), (b, a, c))])
    np.testing.assert_allclose(together.before[1], alone.before[0], atol=1e-5)
    np.testing.assert_allclose(together.after[1], alone.after[0], atol=1e-5)
    # The shared first cycle is one model: its hops measured the same, bit for bit.
    assert np.array_equal(together.after[0, :3], together.after[1, :3])
    with pytest.raises(ValueError, match="equal cycles"):
        train_schedules_batched(plan, fed, [((a, b, c),), ((a, b, c), (a, b, c))])


def test_trial_runs_answer_from_the_oracle_or_by_training() -> None:
    plan, fed = _plan(cycles=2), _federation()
    a, b, c = SITES
    scores = evaluate_orders(plan, fed, [(a, b, c), (c, b, a)], [0, 1])
    runs = TrialRuns(scores, 1, plan, fed)
    seeded = dataclasses.replace(plan, run=dataclasses.replace(plan.run, seed=1))
    history = simulated_history(seeded, fed)
    mixed = ((a, b, c), (c, b, a))
    for schedule in [((a, b, c),), ((c, b, a), (c, b, a)), mixed]:
        acc = train_schedules_batched(seeded, fed, [schedule])
        mine = runs.history(schedule)
        assert [h.site_id for h in mine] == [s for order in schedule for s in order]
        assert [h.cycle for h in mine] == [c for c, o in enumerate(schedule) for _ in o]
        _assert_hops_match(acc, 0, tuple(history(schedule)))
        _assert_hops_match(acc, 0, mine)
    assert runs.test_accuracy(((c, b, a), (c, b, a))) == scores.test[1, 1]
    assert list(runs._trained) == [((a, b, c), (c, b, a))]  # the oracle answered the rest
    single = simulate_sequential(seeded, fed, mixed).test_metrics["accuracy"]
    assert runs.test_accuracy(mixed) == pytest.approx(single, abs=1.5 / len(fed.test))


def test_batched_training_refuses_what_it_cannot_reproduce() -> None:
    adam = _plan(optimizer="adam")
    assert not supports_batched(adam)
    dropout = dataclasses.replace(
        _plan(), model=ModelSection(name="mlp", args={"hidden": [8], "dropout": 0.2})
    )
    assert not supports_batched(dropout)
    with pytest.raises(ValueError, match="SGD"):
        train_orders_batched(adam, _federation(), [SITES])
    with pytest.raises(ValueError, match="unknown site"):
        train_orders_batched(_plan(), _federation(), [("site-0", "nowhere", "site-2")])


def test_fedavg_of_one_site_is_that_sites_training() -> None:
    # FedAvg through Flower's aggregation of a single reply returns that reply.
    plan = dataclasses.replace(_plan(cycles=1), run=RunSection(name="t", sites=("only",), seed=5))
    fed = make_federation("digits", ("only",), Partition(kind="iid"), seed=1)
    single = simulate_sequential(plan, fed, [("only",)])
    assert fedavg_accuracy(plan, fed) == pytest.approx(single.test_metrics["accuracy"])


def test_context_leaves_out_the_hop_still_training() -> None:
    plan, fed = _plan(), _federation()
    hops = simulate_sequential(plan, fed, [SITES, SITES]).hops
    ctx = context_for(SITES, {}, outcomes_of(hops), cycle=1, seed=5)
    assert [h.site_id for h in ctx.history] == list(SITES[:2])
    assert ctx.history[0].metrics_before == hops[0].metrics_before
    assert context_for(SITES, {}, outcomes_of(hops), cycle=0, seed=5).history == ()


def test_smoke_grid_end_to_end_through_the_command(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so Typer keeps "lab" as a subcommand
        """Unused."""

    started = time.perf_counter()
    result = CliRunner().invoke(app, ["lab", "--grid", "smoke", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 40
    payload = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    records = payload["records"]
    assert {r["strategy"] for r in records} >= {"fixed", "random", "learned", "fedavg"}
    for record in records:
        assert set(REQUIRED_KEYS) <= set(record)
        assert (record["dataset"], record["partition"], record["k"]) == ("wine", "dirichlet-0.5", 3)
        assert 0.0 <= record["percentile_mean"] <= 100.0
        assert 0.0 <= record["best_order_rate"] <= 1.0
        assert record["orders"] == 6
        assert record["ci95"] == [None, None]  # one partition seed: no interval
        assert 0.0 <= record["loo_oracle_percentile"] <= 100.0
        assert record["loo_oracle_best_order_rate"] in (0.0, 0.5, 1.0)  # 2 repetitions
    fixed = next(r for r in records if r["strategy"] == "fixed")
    assert fixed["regret_mean"] >= 0.0
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert table.count("\n") == len(records) + 2
    png = (tmp_path / "percentiles.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000
    assert payload["meta"]["jobs"] == 1
    svg = ET.parse(tmp_path / "percentiles.svg").getroot()
    assert svg.tag.endswith("svg")
    assert len([e for e in svg.iter() if e.tag.endswith("rect")]) == len(records)


def test_unknown_grid_is_a_config_error(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        """Unused."""

    result = CliRunner().invoke(app, ["lab", "--grid", "huge", "--out", str(tmp_path)])
    assert result.exit_code == 60
    assert not (tmp_path / "results.json").exists()


def test_probes_never_use_the_seed_of_the_run_they_inform() -> None:
    plan, fed = _plan(cycles=1), _federation()
    orders = list(itertools.permutations(SITES))
    scores = evaluate_orders(plan, fed, orders, [0, 1, 2])
    prober = OracleProber(scores, 1, plan, fed)
    order = orders[3]
    # Repetitions 0 and 1 of a probe for repetition 1 are the oracle's runs with seeds 2, 0.
    assert prober(order, 0) == {"accuracy": scores.val[3, 2], "loss": scores.val_loss[3, 2]}
    assert prober(order, 1) == {"accuracy": scores.val[3, 0], "loss": scores.val_loss[3, 0]}
    # Beyond, a fresh run with a seed no final run uses.
    fresh = dataclasses.replace(plan, run=dataclasses.replace(plan.run, seed=3 + 2))
    state = simulate_sequential(fresh, fed, [order]).state
    accuracy, loss = pooled_metrics(fresh, fed, state, pooled_val(fed))
    probe = prober(order, 2)
    assert probe["accuracy"] == pytest.approx(accuracy, abs=1.5 / len(pooled_val(fed).y))
    assert probe["loss"] == pytest.approx(loss, abs=1e-4)


def test_gather_probes_runs_what_the_planner_asks_within_the_budget() -> None:
    asked: list[tuple[tuple[str, ...], int]] = []

    def value(order: tuple[str, ...]) -> float:
        return 0.5 + 0.1 * SITES.index(order[-1])

    def measure(order: tuple[str, ...], repetition: int) -> dict[str, float]:
        asked.append((order, repetition))
        return {"accuracy": value(order), "loss": 1.0 - value(order)}

    probes = gather_probes(LearnedOrder(), SITES, {}, seed=4, budget=8, measure=measure)
    assert len(probes) == len(asked) == 8
    assert [p.order for p in probes] == [o for o, _ in asked]
    assert [p.metrics["accuracy"] for p in probes] == [value(o) for o, _ in asked]
    repeats = Counter(o for o, _ in asked)
    assert len(repeats) == 6
    assert sorted(repeats.values()) == [1, 1, 1, 1, 2, 2]
    assert sorted(r for _, r in asked).count(1) == 2  # a repeated order counts its repetition
