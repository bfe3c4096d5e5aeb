"""Tests for the learned strategy: features, the ridge surrogate, observations, search."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import numpy as np
import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from ordering import HopOutcome, OrderingContext, ProbeOutcome, Reshuffle, make_strategy
from ordering.learned import (
    LearnedOrder,
    RidgeSurrogate,
    feature_matrix,
    observations,
    order_features,
)

SITES = ("a", "b", "c", "d", "e")


def test_order_features_encode_last_site_precedence_and_neighbours() -> None:
    d = [[0.0, 1.0, 0.5], [1.0, 0.0, 0.25], [0.5, 0.25, 0.0]]
    feats = order_features((2, 0, 1), d)
    # last = site 1 (valued 2); precedence (0<1: 0 before 1 -> +1), (0<2: -1), (1<2: -1);
    # neighbours.
    assert feats == [0.0, 2.0, 0.0, 1.0, -1.0, -1.0, (0.5 + 1.0) / 2]


def test_feature_matrix_is_the_features_of_each_order() -> None:
    gen = np.random.default_rng(3)
    d = gen.uniform(size=(4, 4))
    d = (d + d.T) / 2
    orders = list(itertools.permutations(range(4)))
    rows = feature_matrix(orders, d.tolist())
    assert rows.shape == (24, 4 + 6 + 1)
    for order, row in zip(orders, rows, strict=True):
        pos = {s: p for p, s in enumerate(order)}
        last = [2.0 if order[-1] == i else 0.0 for i in range(4)]
        prec = [1.0 if pos[i] < pos[j] else -1.0 for i in range(4) for j in range(i + 1, 4)]
        near = sum(d[a, b] for a, b in itertools.pairwise(order)) / 3
        np.testing.assert_allclose(row, [*last, *prec, near])


def test_ridge_surrogate_recovers_noiseless_linear_weights() -> None:
    gen = np.random.default_rng(0)
    x = gen.normal(size=(200, 6))
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    src = (np.arange(200) % 2).astype(np.int64)
    y = x @ w + np.where(src == 0, 10.0, -4.0)
    model = RidgeSurrogate.fit(x, src, y, ridge=1e-6)
    np.testing.assert_allclose(model.mean[:6], w, atol=1e-4)
    np.testing.assert_allclose(model.predict(x[:3]), (x @ w)[:3] + 10.0, atol=1e-3)
    draw = model.sample(np.random.default_rng(1))
    np.testing.assert_allclose(draw[:6], w, atol=1e-2)  # a tight posterior


def _true_quality(order: tuple[str, ...]) -> float:
    # Quality rises with "e" last and with "a" early: a function in the features' span.
    return 0.6 + 0.2 * (order[-1] == "e") + 0.05 * (4 - order.index("a")) / 4


def _probes(orders: list[tuple[str, ...]]) -> tuple[ProbeOutcome, ...]:
    return tuple(ProbeOutcome(order=o, metrics={"accuracy": _true_quality(o)}) for o in orders)


def test_with_enough_probes_it_finds_the_best_order() -> None:
    perms = list(itertools.permutations(SITES))
    best = max(_true_quality(p) for p in perms)
    # The probes never saw a best order: the surrogate must generalize, not replay.
    probed = [p for p in perms if _true_quality(p) < best - 1e-9]
    random.Random(0).shuffle(probed)
    ctx = OrderingContext(sites=SITES, probes=_probes(probed[:25]), seed=4)
    order = make_strategy("learned", {"explore": "greedy"}).cycle_order(ctx)
    assert _true_quality(order) == pytest.approx(best)
    # Thompson sampling explores near the optimum: "e" last every time, "a" early.
    for seed in range(10):
        ctx = OrderingContext(sites=SITES, probes=_probes(probed[:25]), seed=seed)
        order = make_strategy("learned", {"explore": "thompson"}).cycle_order(ctx)
        assert order[-1] == "e"
        assert _true_quality(order) >= best - 0.025


def test_without_observations_it_is_reshuffle() -> None:
    history = tuple(
        HopOutcome(cycle=c, site_id=s, metrics_before={"accuracy": 0.5})
        for c, order in enumerate([("c", "a", "e", "b", "d"), ("d", "b", "a", "e", "c")])
        for s in order
    )
    for cycle in range(4):
        ctx = OrderingContext(sites=SITES, history=history[: cycle * 5], cycle=cycle, seed=7)
        assert make_strategy("learned", {}).cycle_order(ctx) == Reshuffle().cycle_order(ctx)


def test_few_observations_explore_an_unseen_order() -> None:
    seen = list(itertools.permutations(SITES))[:2]
    strategy = make_strategy("learned", {})
    for seed in range(50):
        ctx = OrderingContext(sites=SITES, probes=_probes(seen), seed=seed)
        order = strategy.cycle_order(ctx)
        assert order not in seen
        assert sorted(order) == sorted(SITES)


def test_observations_from_history_use_the_next_cycles_first_hop() -> None:
    def hop(cycle: int, site: str, acc: float) -> HopOutcome:
        return HopOutcome(cycle=cycle, site_id=site, metrics_before={"accuracy": acc})

    history = (
        hop(0, "b", 0.1),
        hop(0, "a", 0.2),
        hop(0, "c", 0.3),
        hop(1, "c", 0.7),
        hop(1, "a", 0.8),
        hop(1, "b", 0.9),
        hop(2, "a", 0.75),
    )
    ctx = OrderingContext(sites=("a", "b", "c"), history=history, cycle=3)
    obs = observations(ctx, "accuracy")
    assert [(o.order, o.value, o.source) for o in obs] == [
        ((1, 0, 2), 0.7, 1),
        ((2, 0, 1), 0.75, 1),
    ]
    # Planning cycle 2: hops of cycle 2 do not count, so cycle 1 has no observation.
    ahead = OrderingContext(sites=("a", "b", "c"), history=history, cycle=2)
    assert [o.order for o in observations(ahead, "accuracy")] == [(1, 0, 2)]
    by_loss = OrderingContext(
        sites=("a",), probes=(ProbeOutcome(order=("a",), metrics={"loss": 2.0}),)
    )
    assert [o.value for o in observations(by_loss, "loss")] == [-2.0]


def test_large_runs_are_searched_without_enumeration() -> None:
    sites = tuple(f"s{i}" for i in range(10))
    gen = random.Random(1)
    orders = [tuple(gen.sample(sites, len(sites))) for _ in range(60)]
    probes = tuple(
        ProbeOutcome(order=o, metrics={"accuracy": float(o[-1] == "s3")}) for o in orders
    )
    profiles = {s: DataProfile(num_examples=5, label_histogram=(1, 2)) for s in sites}
    ctx = OrderingContext(sites=sites, probes=probes, profiles=profiles)
    order = make_strategy("learned", {"explore": "greedy"}).cycle_order(ctx)
    assert order[-1] == "s3"


@pytest.mark.parametrize(
    "options",
    [{"ridge": 0}, {"ridge": "big"}, {"min_observations": 0}, {"explore": "ucb"}, {"metric": ""}],
)
def test_rejects_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("learned", options)
    assert repr(next(iter(options))) in str(info.value)


def _plan_probes(
    sites: tuple[str, ...], budget: int, quality: Callable[[tuple[str, ...]], float], seed: int
) -> list[tuple[str, ...]]:
    strategy = LearnedOrder()
    probes: list[ProbeOutcome] = []
    while True:
        ctx = OrderingContext(sites=sites, probes=tuple(probes), seed=seed)
        order = strategy.next_probe(ctx, budget)
        if order is None:
            return [p.order for p in probes]
        assert sorted(order) == sorted(sites)
        probes.append(ProbeOutcome(order=order, metrics={"accuracy": quality(order)}))


def test_first_probes_put_every_site_last_once_and_every_pair_both_ways() -> None:
    for seed in range(5):
        first = _plan_probes(SITES, len(SITES), _true_quality, seed)
        assert len(first) == len(SITES)
        assert sorted(o[-1] for o in first) == sorted(SITES)
        for a, b in itertools.permutations(SITES, 2):
            assert any(o.index(a) < o.index(b) for o in first)


def test_later_probes_go_where_the_surrogate_expects_the_best_order() -> None:
    perms = list(itertools.permutations(SITES))
    best = max(_true_quality(p) for p in perms)
    for seed in range(5):
        probed = _plan_probes(SITES, 2 * len(SITES), _true_quality, seed)
        assert len(probed) == 2 * len(SITES)
        assert len(set(probed)) == len(probed)  # nothing probed twice while orders are left
        # Every guided probe puts "e" last: the surrogate learned what matters.
        assert all(o[-1] == "e" for o in probed[len(SITES) :])
        ctx = OrderingContext(sites=SITES, probes=_probes(probed), seed=seed)
        chosen = make_strategy("learned", {"explore": "greedy"}).cycle_order(ctx)
        assert _true_quality(chosen) == pytest.approx(best)


def test_probes_repeat_the_best_orders_once_every_order_was_probed() -> None:
    sites = ("a", "b", "c")

    def quality(order: tuple[str, ...]) -> float:
        return {"a": 0.9, "b": 0.5, "c": 0.1}[order[-1]] + 0.01 * (order[0] == "c")

    probed = _plan_probes(sites, 8, quality, 3)
    assert sorted(probed[:6]) == sorted(itertools.permutations(sites))
    # The two repetitions are the two orders the surrogate ranks highest.
    assert sorted(probed[6:]) == [("b", "c", "a"), ("c", "b", "a")]


def test_next_probe_is_pure_and_stops_at_the_budget() -> None:
    probes = _probes([("a", "b", "c", "d", "e")])
    ctx = OrderingContext(sites=SITES, probes=probes, seed=7)
    strategy = LearnedOrder()
    assert strategy.next_probe(ctx, 4) == strategy.next_probe(ctx, 4)
    assert strategy.next_probe(ctx, 1) is None
    assert strategy.next_probe(OrderingContext(sites=("a",)), 3) is None


def _perplexity_probes(sites: tuple[str, ...]) -> tuple[ProbeOutcome, ...]:
    """Every order probed once: those ending at site "c" reach a far lower perplexity."""
    return tuple(
        ProbeOutcome(
            order=o, metrics={"perplexity": (5.0 if o[-1] == "c" else 9.0) + 0.01 * i, "loss": 1.0}
        )
        for i, o in enumerate(itertools.permutations(sites))
    )


@pytest.mark.parametrize("surrogate", ["ridge", "gp"])
def test_a_lower_is_better_primary_metric_picks_the_lowest_and_flips_with_direction(
    surrogate: str,
) -> None:
    sites = ("a", "b", "c", "d")
    probes = _perplexity_probes(sites)
    strategy = make_strategy("learned", {"surrogate": surrogate})
    lower = OrderingContext(sites=sites, probes=probes, metric="perplexity", higher_is_better=False)
    assert strategy.cycle_order(lower)[-1] == "c"
    assert [o.value for o in observations(lower)][:1] == [-probes[0].metrics["perplexity"]]
    higher = OrderingContext(sites=sites, probes=probes, metric="perplexity")
    assert strategy.cycle_order(higher)[-1] != "c"
    # An explicit option naming the primary metric reads it the same way.
    named = make_strategy("learned", {"surrogate": surrogate, "metric": "perplexity"})
    assert named.cycle_order(lower)[-1] == "c"
