"""One contract suite for every ordering strategy, plus strategy-specific properties."""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter

import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from ordering import (
    HopOutcome,
    OrderingContext,
    OrderingStrategy,
    cycle_rng,
    known_strategies,
    make_strategy,
)

DETERMINISTIC = frozenset({"fixed", "by_size", "typicality", "path", "greedy_loss"})
RANDOMIZED = frozenset({"random", "reshuffle", "learned"})
NAN = float("nan")
SITES = ("st-anna", "general", "mercy", "county", "university")


def _ctx(
    sites: tuple[str, ...] = SITES,
    *,
    seed: int = 7,
    cycle: int = 0,
    history: tuple[HopOutcome, ...] = (),
) -> OrderingContext:
    profiles = {
        s: DataProfile(num_examples=10 * (i + 1), label_histogram=(i, i + 1), task="t")
        for i, s in enumerate(sites)
    }
    return OrderingContext(sites=sites, profiles=profiles, history=history, cycle=cycle, seed=seed)


def _full_cycle(order: tuple[str, ...], cycle: int) -> tuple[HopOutcome, ...]:
    return tuple(
        HopOutcome(
            cycle=cycle, site_id=s, metrics_before={"loss": 1.0}, metrics_after={"loss": 0.5}
        )
        for s in order
    )


def test_every_strategy_is_classified() -> None:
    # A new strategy must be added to one of the sets, so the contract covers it.
    assert set(known_strategies()) == DETERMINISTIC | RANDOMIZED
    assert known_strategies()[:3] == ("fixed", "random", "reshuffle")


class TestStrategyContract:
    """The Constraints of ``OrderingStrategy``, checked for every registered strategy."""

    @pytest.fixture(params=known_strategies())
    def strategy(self, request: pytest.FixtureRequest) -> OrderingStrategy:
        name: str = request.param
        return make_strategy(name, {})

    def test_name_matches_registration(self, strategy: OrderingStrategy) -> None:
        assert strategy.name in known_strategies()
        assert make_strategy(strategy.name, {}).name == strategy.name

    @pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
    def test_returns_a_permutation(self, strategy: OrderingStrategy, n: int) -> None:
        sites = tuple(f"site-{i}" for i in range(n))
        for seed in range(50):
            for cycle in range(3):
                order = strategy.cycle_order(_ctx(sites, seed=seed, cycle=cycle))
                assert isinstance(order, tuple)
                assert sorted(order) == sorted(sites)
                assert len(order) == n

    @pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
    def test_returns_a_permutation_whatever_the_history_and_profiles(
        self, strategy: OrderingStrategy, n: int
    ) -> None:
        # Ragged histories: partial cycles, unknown sites, missing or non-finite metrics,
        # sites without profiles, histograms of different lengths.
        sites = tuple(f"site-{i}" for i in range(n))
        gen = random.Random(n)
        for seed in range(20):
            history = tuple(
                HopOutcome(
                    cycle=h // max(1, n),
                    site_id=gen.choice([*sites, "stranger"]),
                    metrics_before=gen.choice(
                        [{}, {"loss": gen.random(), "accuracy": gen.random()}, {"loss": NAN}]
                    ),
                    metrics_after={"loss": gen.random()},
                )
                for h in range(gen.randrange(0, 4 * n + 1))
            )
            profiles = {
                s: DataProfile(
                    num_examples=gen.randrange(0, 100),
                    label_histogram=tuple(gen.randrange(0, 5) for _ in range(gen.randrange(4))),
                )
                for s in sites
                if gen.random() < 0.8
            }
            for cycle in range(4):
                ctx = OrderingContext(
                    sites=sites, profiles=profiles, history=history, cycle=cycle, seed=seed
                )
                order = strategy.cycle_order(ctx)
                assert sorted(order) == sorted(sites)

    def test_empty_site_list_gives_empty_order(self, strategy: OrderingStrategy) -> None:
        assert strategy.cycle_order(_ctx(())) == ()

    def test_deterministic_for_equal_contexts(self, strategy: OrderingStrategy) -> None:
        for seed in range(30):
            history = _full_cycle(SITES, 0)
            first = strategy.cycle_order(_ctx(seed=seed, cycle=1, history=history))
            # A fresh strategy and an equal (not identical) context: as after a restart.
            again = make_strategy(strategy.name, {}).cycle_order(
                _ctx(seed=seed, cycle=1, history=copy.deepcopy(history))
            )
            assert again == first

    def test_does_not_mutate_the_context(self, strategy: OrderingStrategy) -> None:
        history = _full_cycle(("general", "mercy"), 0)
        ctx = _ctx(seed=3, cycle=1, history=history)
        snapshot = copy.deepcopy(ctx)
        strategy.cycle_order(ctx)
        assert ctx == snapshot
        assert dict(ctx.profiles) == dict(snapshot.profiles)
        assert [dict(h.metrics_after) for h in ctx.history] == [
            dict(h.metrics_after) for h in snapshot.history
        ]

    def test_seeds_vary_the_order_only_for_random_strategies(
        self, strategy: OrderingStrategy
    ) -> None:
        orders = {strategy.cycle_order(_ctx(seed=seed)) for seed in range(200)}
        if strategy.name in RANDOMIZED:
            # 120 permutations of 5 sites; 200 uniform draws hit far more than 50 of them.
            assert len(orders) > 50
        else:
            assert len(orders) == 1

    def test_cycles_vary_the_order_only_for_random_strategies(
        self, strategy: OrderingStrategy
    ) -> None:
        orders = {strategy.cycle_order(_ctx(seed=1, cycle=c)) for c in range(200)}
        if strategy.name in RANDOMIZED:
            assert len(orders) > 50
        else:
            assert len(orders) == 1


def test_make_strategy_rejects_unknown_names_listing_the_known() -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("by_moon_phase", {})
    assert "'by_moon_phase'" in str(info.value)
    assert "fixed, random, reshuffle" in str(info.value)


@pytest.mark.parametrize("name", known_strategies())
def test_make_strategy_rejects_any_option(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy(name, {"temperature": 2})
    assert "temperature" in str(info.value)
    assert repr(name) in str(info.value)


def test_context_rejects_duplicate_sites_and_negative_cycles() -> None:
    with pytest.raises(ValueError, match="repeat"):
        OrderingContext(sites=("a", "b", "a"))
    with pytest.raises(ValueError, match="cycle"):
        OrderingContext(sites=("a",), cycle=-1)


def test_cycle_rng_follows_its_documented_derivation() -> None:
    import hashlib
    import random

    digest = hashlib.sha256(b"baton-ordering:42:3").digest()
    expected = random.Random(int.from_bytes(digest[:8], "big"))
    assert cycle_rng(42, 3).random() == expected.random()
    assert cycle_rng(42, 3).random() != cycle_rng(42, 4).random()


def test_schedules_are_pinned_across_versions() -> None:
    # A coordinator recomputes schedules after a restart, possibly after an upgrade:
    # these orders must never change for an existing (seed, cycle).
    sites = ("a", "b", "c", "d")
    assert make_strategy("random", {}).cycle_order(_ctx(sites, seed=11, cycle=0)) == PINNED_0
    assert make_strategy("random", {}).cycle_order(_ctx(sites, seed=11, cycle=1)) == PINNED_1


PINNED_0 = ("b", "a", "d", "c")
PINNED_1 = ("a", "d", "c", "b")


def test_fixed_keeps_the_plan_order_whatever_the_history() -> None:
    history = _full_cycle(SITES, 0)
    assert make_strategy("fixed", {}).cycle_order(_ctx(cycle=1, history=history)) == SITES


def test_reshuffle_never_repeats_a_site_across_the_cycle_boundary() -> None:
    strategy = make_strategy("reshuffle", {})
    for sites in (("a", "b"), ("a", "b", "c"), SITES):
        for seed in range(1000):
            first = strategy.cycle_order(_ctx(sites, seed=seed, cycle=0))
            second = strategy.cycle_order(
                _ctx(sites, seed=seed, cycle=1, history=_full_cycle(first, 0))
            )
            assert second[0] != first[-1], (sites, seed)


def test_reshuffle_redraws_only_when_needed() -> None:
    # Where the cycle's first draw already qualifies, reshuffle equals random.
    random_order = make_strategy("random", {})
    reshuffle = make_strategy("reshuffle", {})
    same = redrawn = 0
    for seed in range(300):
        drawn = random_order.cycle_order(_ctx(seed=seed, cycle=1))
        history = _full_cycle(tuple(reversed(SITES)), 0)  # ends with SITES[0]
        got = reshuffle.cycle_order(_ctx(seed=seed, cycle=1, history=history))
        if drawn[0] != SITES[0]:
            assert got == drawn
            same += 1
        else:
            assert got[0] != SITES[0]
            redrawn += 1
    assert same > 0
    assert redrawn > 0


def test_reshuffle_ignores_hops_of_the_cycle_being_planned() -> None:
    # After a restart the history may already hold hops of the cycle being recomputed.
    strategy = make_strategy("reshuffle", {})
    for seed in range(200):
        earlier = _full_cycle(("c", "a", "b"), 0)
        base = strategy.cycle_order(_ctx(("a", "b", "c"), seed=seed, cycle=1, history=earlier))
        assert base[0] != "b"
        partial = earlier + _full_cycle(base[:2], 1)
        again = strategy.cycle_order(_ctx(("a", "b", "c"), seed=seed, cycle=1, history=partial))
        assert again == base


def test_reshuffle_plans_ahead_while_the_last_hop_is_in_flight() -> None:
    # The coordinator plans cycle 1 when the last hop of cycle 0 asks who is next: that
    # hop is not yet in the history, and the order must be the one it gets afterwards.
    strategy = make_strategy("reshuffle", {})
    for sites in (("a", "b"), ("a", "b", "c"), SITES):
        for seed in range(1000):
            first = strategy.cycle_order(_ctx(sites, seed=seed, cycle=0))
            ahead = strategy.cycle_order(
                _ctx(sites, seed=seed, cycle=1, history=_full_cycle(first[:-1], 0))
            )
            after = strategy.cycle_order(
                _ctx(sites, seed=seed, cycle=1, history=_full_cycle(first, 0))
            )
            assert ahead == after, (sites, seed)
            assert ahead[0] != first[-1], (sites, seed)


def test_reshuffle_without_history_replays_its_own_schedule() -> None:
    strategy = make_strategy("reshuffle", {})
    for seed in range(100):
        history: tuple[HopOutcome, ...] = ()
        orders = []
        for cycle in range(6):
            order = strategy.cycle_order(_ctx(seed=seed, cycle=cycle, history=history))
            orders.append(order)
            history += _full_cycle(order, cycle)
        for cycle in range(1, 6):
            assert orders[cycle][0] != orders[cycle - 1][-1]
            assert strategy.cycle_order(_ctx(seed=seed, cycle=cycle)) == orders[cycle]
            # Any prefix of the history, whole cycles or not, gives the same schedule.
            cut = history[: cycle * len(SITES) - 2]
            assert strategy.cycle_order(_ctx(seed=seed, cycle=cycle, history=cut)) == orders[cycle]


def test_reshuffle_allows_a_single_site() -> None:
    strategy = make_strategy("reshuffle", {})
    ctx = _ctx(("only",), cycle=4, history=_full_cycle(("only",), 3))
    assert strategy.cycle_order(ctx) == ("only",)


def _chi_square(counts: Counter[tuple[str, ...]], categories: list[tuple[str, ...]]) -> float:
    total = sum(counts.values())
    expected = total / len(categories)
    assert set(counts) <= set(categories)
    return sum((counts[c] - expected) ** 2 / expected for c in categories)


# The draws below use fixed seeds, so each test is deterministic and cannot flake. The bounds
# are the 0.1% critical values of the chi-square distribution (5 and 3 degrees of freedom): a
# uniform generator passes them, while a biased one (e.g. a naive swap shuffle, which puts
# 1.3x the mass on some orders) exceeds them by far at these sample sizes.
CHI2_5DF_P001 = 20.52
CHI2_3DF_P001 = 16.27


def test_random_is_uniform_over_the_permutations_of_three_sites() -> None:
    sites = ("a", "b", "c")
    strategy = make_strategy("random", {})
    counts: Counter[tuple[str, ...]] = Counter(
        strategy.cycle_order(_ctx(sites, seed=seed, cycle=cycle))
        for seed in range(2000)
        for cycle in range(3)
    )
    perms = list(itertools.permutations(sites))
    assert len(counts) == 6
    assert _chi_square(counts, perms) < CHI2_5DF_P001


def test_reshuffle_is_uniform_over_the_allowed_permutations() -> None:
    sites = ("a", "b", "c")
    strategy = make_strategy("reshuffle", {})
    history = _full_cycle(("b", "c", "a"), 0)  # "a" trained last
    counts: Counter[tuple[str, ...]] = Counter(
        strategy.cycle_order(_ctx(sites, seed=seed, cycle=1, history=history))
        for seed in range(6000)
    )
    allowed = [p for p in itertools.permutations(sites) if p[0] != "a"]
    assert len(counts) == 4
    assert _chi_square(counts, allowed) < CHI2_3DF_P001


def test_random_cycles_are_independent() -> None:
    # The pair (order in cycle 0, order in cycle 1) is uniform over all 36 pairs.
    sites = ("a", "b", "c")
    strategy = make_strategy("random", {})
    pairs = Counter(
        (
            strategy.cycle_order(_ctx(sites, seed=seed, cycle=0)),
            strategy.cycle_order(_ctx(sites, seed=seed, cycle=1)),
        )
        for seed in range(7200)
    )
    assert len(pairs) == 36
    expected = 7200 / 36
    chi2 = sum((n - expected) ** 2 / expected for n in pairs.values())
    assert chi2 < 66.62  # 0.1% critical value, 35 degrees of freedom
