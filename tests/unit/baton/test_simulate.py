"""Tests for sim.simulate: sequential simulation and the centralized baseline."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from baton.ml.codec import load_into, state_of
from baton.ml.models import build_model
from baton.ml.task import Metric
from baton.ml.trainer import evaluate, hop_seed, train_local
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from sim.simulate import simulate_sequential, train_centralized
from sim.tasks import Federation, Partition, make_federation

SITES = ("hospital-1", "hospital-2", "hospital-3", "hospital-4")

DEMO_TRAINING = TrainingSection(
    optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-3, batch_size=16, local_epochs=3
)
"""The demo's local training policy, chosen by simulating partition seeds 0-39."""


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _plan(seed: int, training: TrainingSection = DEMO_TRAINING, cycles: int = 3) -> RunPlan:
    return RunPlan(
        run=RunSection(name="demo", sites=SITES, cycles=cycles, seed=seed),
        model=ModelSection(name="mlp", args={"hidden": [32]}),
        task=TaskSection(dataset="breast_cancer"),
        training=training,
    )


def _federation(seed: int) -> Federation:
    return make_federation(
        "breast_cancer", SITES, Partition(kind="dirichlet", alpha=0.5), seed=seed
    )


def _random_orders(seed: int, cycles: int = 3) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(SITES, len(SITES)) for _ in range(cycles)]


def test_hop_records_follow_the_orders() -> None:
    fed = _federation(0)
    orders = [["hospital-2", "hospital-1"], ["hospital-4", "hospital-2", "hospital-3"]]
    result = simulate_sequential(_plan(0), fed, orders)
    assert [(h.hop, h.cycle, h.site) for h in result.hops] == [
        (0, 0, "hospital-2"),
        (1, 0, "hospital-1"),
        (2, 1, "hospital-4"),
        (3, 1, "hospital-2"),
        (4, 1, "hospital-3"),
    ]
    for hop in result.hops:
        val_size = float(len(fed.sites[hop.site].val))
        assert hop.metrics_before["num_examples"] == val_size
        assert hop.metrics_after["num_examples"] == val_size
        assert hop.train.num_examples == len(fed.sites[hop.site].train)
    assert result.test_metrics["num_examples"] == float(len(fed.test))


def test_simulation_equals_the_site_trainer_run_by_hand() -> None:
    fed, plan, orders = _federation(1), _plan(1), _random_orders(1, cycles=2)
    result = simulate_sequential(plan, fed, orders)
    model = build_model("mlp", {"hidden": [32]}, num_features=30, num_classes=2, seed=1)
    for hop, site in enumerate(s for order in orders for s in order):
        train_local(model, fed.sites[site].train, plan.training, seed=hop_seed(1, hop))
    expected = state_of(model)
    assert sorted(result.state) == sorted(expected)
    assert all(torch.equal(result.state[k], expected[k]) for k in expected)
    assert result.test_metrics == evaluate(model, fed.test)


def test_simulation_gives_the_trainer_each_hops_place_in_its_cycle() -> None:
    cyclical = dataclasses.replace(DEMO_TRAINING, lr_schedule="cyclical", lr_min_ratio=0.1)
    fed, plan, orders = _federation(1), _plan(1, cyclical, cycles=2), _random_orders(1, cycles=2)
    result = simulate_sequential(plan, fed, orders)
    model = build_model("mlp", {"hidden": [32]}, num_features=30, num_classes=2, seed=1)
    for hop, site in enumerate(s for order in orders for s in order):
        train_local(
            model,
            fed.sites[site].train,
            plan.training,
            seed=hop_seed(1, hop),
            hop_index=hop,
            num_sites=len(SITES),
        )
    assert all(torch.equal(result.state[k], v) for k, v in state_of(model).items())
    plain = simulate_sequential(_plan(1, cycles=2), fed, orders)
    assert not all(torch.equal(result.state[k], v) for k, v in plain.state.items())


def test_centralized_baseline_ignores_the_forgetting_remedies(one_thread: None) -> None:
    remedied = dataclasses.replace(
        DEMO_TRAINING, lr_schedule="cyclical", proximal_mu=1.0, reference_examples=50
    )
    fed = _federation(0)
    assert train_centralized(_plan(0, remedied), fed) == train_centralized(_plan(0), fed)


def test_final_state_reproduces_test_metrics() -> None:
    fed = _federation(2)
    result = simulate_sequential(_plan(2), fed, _random_orders(2))
    model = build_model("mlp", {"hidden": [32]}, num_features=30, num_classes=2, seed=99)
    load_into(model, result.state)
    assert evaluate(model, fed.test) == result.test_metrics


def test_simulation_is_deterministic() -> None:
    fed, orders = _federation(3), _random_orders(3)
    a = simulate_sequential(_plan(3), fed, orders)
    b = simulate_sequential(_plan(3), fed, orders)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert [h.metrics_after for h in a.hops] == [h.metrics_after for h in b.hops]


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        ([], "at least one non-empty cycle"),
        ([["hospital-1"], []], "at least one non-empty cycle"),
        ([["hospital-1", "hospital-9"]], "unknown site 'hospital-9'"),
    ],
)
def test_bad_orders_are_rejected(orders: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_sequential(_plan(0), _federation(0), orders)


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        (TrainingSection(local_epochs=2), {"local_epochs": 6, "local_steps": 0}),
        (TrainingSection(local_steps=5), {"local_epochs": 2, "local_steps": 3 * 4 * 5}),
    ],
)
def test_centralized_uses_equal_compute(
    training: TrainingSection, expected: dict[str, int]
) -> None:
    seen: list[dict[str, Any]] = []
    real = train_local

    def spy(model: Any, split: Any, section: TrainingSection, **kwargs: Any) -> Any:
        seen.append({"n": len(split), **dataclasses.asdict(section), **kwargs})
        return real(model, split, dataclasses.replace(section, local_steps=1), **kwargs)

    class SpyTask:
        """The federation's task, whose own training hook is the spy."""

        name = "breast_cancer"
        primary_metric = Metric(name="accuracy", higher_is_better=True)
        train = staticmethod(spy)

    fed = dataclasses.replace(_federation(0), task=SpyTask())  # type: ignore[arg-type]
    metrics = train_centralized(_plan(0, training), fed)
    assert len(seen) == 1
    assert seen[0]["local_epochs"] == expected["local_epochs"]
    assert seen[0]["local_steps"] == expected["local_steps"]
    assert seen[0]["n"] == len(fed.pooled_train())
    assert seen[0]["seed"] == hop_seed(0, 0)
    assert metrics["num_examples"] == float(len(fed.test))


def test_centralized_baseline_is_accurate(one_thread: None) -> None:
    assert train_centralized(_plan(0), _federation(0))["accuracy"] >= 0.95


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_sequential_breast_cancer_reaches_target(one_thread: None, seed: int) -> None:
    """The demo setting: 4 sites, Dirichlet(0.5) label skew, 3 random cycles, an MLP."""
    result = simulate_sequential(_plan(seed), _federation(seed), _random_orders(seed))
    assert len(result.hops) == 12
    assert result.test_metrics["accuracy"] >= 0.92


def test_a_language_model_learns_the_token_task_site_by_site(one_thread: None) -> None:
    """A causal LM travels 3 sites with Dirichlet(0.5) skew of the next token, 2 cycles."""
    sites = SITES[:3]
    plan = RunPlan(
        run=RunSection(name="lm", sites=sites, cycles=2, seed=2),
        model=ModelSection(name="causal_lm", args={"dim": 16, "layers": 1, "heads": 2}),
        task=TaskSection(dataset="tokens"),
        training=TrainingSection(optimizer="adam", lr=0.01, batch_size=32, local_epochs=2),
    )
    fed = make_federation("tokens", sites, Partition(kind="dirichlet", alpha=0.5), seed=2)
    result = simulate_sequential(plan, fed, [list(sites)] * 2)
    # Chance is 1/16; the next token follows from the last two except for noise.
    assert result.test_metrics["accuracy"] >= 0.75
    assert result.test_metrics["accuracy"] >= 0.9 * train_centralized(plan, fed)["accuracy"]
