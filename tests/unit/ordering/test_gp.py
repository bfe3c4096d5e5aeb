"""Tests for the Gaussian-process surrogate over orders and the learned strategy's use of it."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from ordering import HopOutcome, OrderingContext, ProbeOutcome, make_strategy
from ordering.gp import OrderGP, discordant_pairs
from ordering.learned import GP_AFTER_PER_SITE, LearnedOrder, feature_matrix

SITES = ("a", "b", "c", "d", "e")
PERMS = list(itertools.permutations(range(5)))
FLAT = [[0.0] * 5 for _ in range(5)]


def test_discordant_pairs_count_the_pairs_two_orders_disagree_on() -> None:
    orders = random.Random(0).sample(PERMS, 12)
    got = discordant_pairs(np.array(orders), np.array(orders))
    for i, a in enumerate(orders):
        for j, b in enumerate(orders):
            want = sum(
                (a.index(x) < a.index(y)) != (b.index(x) < b.index(y))
                for x, y in itertools.combinations(range(5), 2)
            )
            assert got[i, j] == want
    assert discordant_pairs(np.array([(0, 1, 2)]), np.array([(2, 1, 0)]))[0, 0] == 3


def _peaked(order: tuple[int, ...]) -> float:
    # One order is best and quality falls with Kendall distance from it.
    peak = (3, 1, 4, 0, 2)
    return float(np.exp(-0.6 * discordant_pairs(np.array([order]), np.array([peak]))[0, 0]))


def test_gp_generalizes_to_an_unobserved_peak() -> None:
    gen = np.random.default_rng(1)
    seen = [p for p in PERMS if p != (3, 1, 4, 0, 2)]
    y = np.array([_peaked(p) for p in seen]) + gen.normal(0, 0.01, len(seen))
    gp = OrderGP.fit(seen, feature_matrix(seen, FLAT), y)
    pred = gp.predict(PERMS, feature_matrix(PERMS, FLAT))
    # The unobserved peak is predicted best: the Kendall kernel generalizes to it.
    assert PERMS[int(np.argmax(pred))] == (3, 1, 4, 0, 2)
    assert gp.noise <= 0.15


def test_gp_calls_pure_noise_noise() -> None:
    gen = np.random.default_rng(2)
    y = gen.normal(0.8, 0.02, len(PERMS))
    gp = OrderGP.fit(PERMS, feature_matrix(PERMS, FLAT), y)
    assert gp.noise >= 0.85
    # Its predictions shrink to the mean instead of replaying the noise.
    pred = gp.predict(PERMS, feature_matrix(PERMS, FLAT))
    assert float(np.std(pred)) < 0.5 * float(np.std(y))


def test_gp_needs_two_aligned_observations() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        OrderGP.fit(PERMS[:1], feature_matrix(PERMS[:1], FLAT), np.array([0.5]))
    with pytest.raises(ValueError, match="at least 2"):
        OrderGP.fit(PERMS[:3], feature_matrix(PERMS[:2], FLAT), np.array([0.5, 0.6, 0.7]))


def _probes(orders: list[tuple[int, ...]]) -> tuple[ProbeOutcome, ...]:
    return tuple(
        ProbeOutcome(order=tuple(SITES[i] for i in o), metrics={"accuracy": 0.5 + 0.3 * _peaked(o)})
        for o in orders
    )


def test_with_every_order_probed_the_ridge_smooths_the_best_away_and_auto_keeps_it() -> None:
    # Quality set by which sites are adjacent at both ends of the order: structure the
    # linear features (last site, precedence) cannot express. Every order probed once,
    # with a little noise.
    found = {"auto": 0, "ridge": 0}
    for seed in range(10):
        gen = np.random.default_rng(seed)
        pair = gen.normal(0, 1, (5, 5))
        quality = {p: pair[p[-2], p[-1]] + 0.5 * pair[p[0], p[1]] for p in PERMS}
        probes = tuple(
            ProbeOutcome(
                order=tuple(SITES[i] for i in p),
                metrics={"accuracy": 0.5 + 0.1 * (q + gen.normal(0, 0.05))},
            )
            for p, q in quality.items()
        )
        ctx = OrderingContext(sites=SITES, probes=probes, seed=seed)
        best = max(quality.values())
        for surrogate in found:
            order = make_strategy("learned", {"surrogate": surrogate}).cycle_order(ctx)
            found[surrogate] += quality[tuple(SITES.index(s) for s in order)] >= best - 1e-9
    assert found["auto"] >= 7
    assert found["ridge"] <= 3


def test_auto_uses_the_ridge_up_to_two_probes_per_site() -> None:
    k = len(SITES)
    few = random.Random(4).sample(PERMS, GP_AFTER_PER_SITE * k)
    ctx = OrderingContext(sites=SITES, probes=_probes(few), seed=5)
    auto, ridge = LearnedOrder(), LearnedOrder(surrogate="ridge")
    assert auto.cycle_order(ctx) == ridge.cycle_order(ctx)
    assert auto.next_probe(ctx, 20) == ridge.next_probe(ctx, 20)
    more = random.Random(4).sample(PERMS, GP_AFTER_PER_SITE * k + 1)
    ctx = OrderingContext(sites=SITES, probes=_probes(more), seed=5)
    gp = LearnedOrder(surrogate="gp")
    assert auto.cycle_order(ctx) == gp.cycle_order(ctx)
    assert auto.next_probe(ctx, 20) == gp.next_probe(ctx, 20)


def test_gp_probes_go_to_the_unprobed_order_it_expects_best() -> None:
    seen = [p for p in PERMS if p != (3, 1, 4, 0, 2)]
    ctx = OrderingContext(sites=SITES, probes=_probes(seen), seed=6)
    assert LearnedOrder().next_probe(ctx, 200) == tuple(SITES[i] for i in (3, 1, 4, 0, 2))


def test_gp_with_thompson_sampling_is_refused() -> None:
    with pytest.raises(ConfigError, match="'surrogate'"):
        make_strategy("learned", {"surrogate": "gp", "explore": "thompson"})
    with pytest.raises(ConfigError, match="'surrogate'"):
        make_strategy("learned", {"surrogate": "kriging"})


def test_gp_takes_cycles_of_the_run_beside_probes_and_searches_large_runs() -> None:
    sites = tuple(f"s{i}" for i in range(10))
    gen = random.Random(2)
    orders = [tuple(gen.sample(sites, len(sites))) for _ in range(40)]
    probes = tuple(
        ProbeOutcome(order=o, metrics={"accuracy": 0.5 + 0.3 * (o[-1] == "s3")}) for o in orders
    )
    # Two finished cycles of the run, on another scale: the second's first hop measured
    # the first cycle's model.
    history = tuple(
        HopOutcome(cycle=c, site_id=s, metrics_before={"accuracy": 0.9 + 0.01 * c})
        for c, order in enumerate([sites, sites[::-1]])
        for s in order
    )
    profiles = {s: DataProfile(num_examples=5, label_histogram=(1, 2)) for s in sites}
    ctx = OrderingContext(
        sites=sites, probes=probes, history=history, cycle=2, profiles=profiles, seed=1
    )
    order = make_strategy("learned", {"surrogate": "gp"}).cycle_order(ctx)
    assert sorted(order) == sorted(sites)
    assert order[-1] == "s3"
