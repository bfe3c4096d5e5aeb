"""Tests for the dissimilarity-path strategy and its path solvers."""

from __future__ import annotations

import itertools
import random

import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from ordering import OrderingContext, make_strategy
from ordering.paths import exact_path, path_cost, two_opt_path


def _matrix(k: int, seed: int) -> list[list[float]]:
    gen = random.Random(seed)
    d = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            d[i][j] = d[j][i] = gen.random()
    return d


def _brute_force(d: list[list[float]]) -> float:
    return min(path_cost(p, d) for p in itertools.permutations(range(len(d))))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_exact_path_matches_brute_force(k: int) -> None:
    for seed in range(10):
        d = _matrix(k, seed)
        path = exact_path(d)
        assert sorted(path) == list(range(k))
        assert path_cost(path, d) == pytest.approx(_brute_force(d))


def test_two_opt_path_is_a_local_optimum_never_better_than_exact() -> None:
    for seed in range(10):
        d = _matrix(7, seed)
        path = two_opt_path(d)
        assert sorted(path) == list(range(7))
        cost = path_cost(path, d)
        assert cost >= _brute_force(d) - 1e-12
        for i, j in itertools.combinations(range(7), 2):
            moved = path[:i] + path[i : j + 1][::-1] + path[j + 1 :]
            assert path_cost(moved, d) >= cost - 1e-12
    # On 12 nodes it is close to optimal on average (brute force is out of reach; the
    # exact solver is the reference).
    gaps = []
    for seed in range(5):
        d = _matrix(12, seed)
        gaps.append(path_cost(two_opt_path(d), d) - path_cost(exact_path(d), d))
    assert min(gaps) >= -1e-12
    assert sum(gaps) / len(gaps) < 0.3


def _one_class_sites() -> OrderingContext:
    # Two label groups: a1, a2 hold class 0; b1, b2 hold class 1; "mix" holds both.
    profiles = {
        "a1": DataProfile(num_examples=10, label_histogram=(10, 0)),
        "a2": DataProfile(num_examples=10, label_histogram=(10, 0)),
        "b1": DataProfile(num_examples=10, label_histogram=(0, 10)),
        "b2": DataProfile(num_examples=10, label_histogram=(0, 10)),
        "mix": DataProfile(num_examples=10, label_histogram=(5, 5)),
    }
    return OrderingContext(sites=tuple(profiles), profiles=profiles)


def _groups(order: tuple[str, ...]) -> str:
    return "".join(s[0] for s in order)


def test_max_path_alternates_groups_and_min_path_keeps_them_together() -> None:
    ctx = _one_class_sites()
    for exact in (9, 0):
        longest = make_strategy("path", {"exact_max_sites": exact}).cycle_order(ctx)
        assert _groups(longest).replace("m", "") in ("abab", "baba"), longest
        shortest = make_strategy(
            "path", {"objective": "min", "exact_max_sites": exact}
        ).cycle_order(ctx)
        assert _groups(shortest) in ("aamb" + "b", "bbmaa"), shortest


def test_path_is_oriented_most_typical_last() -> None:
    ctx = _one_class_sites()
    # "mix" is the most typical site; the min path has it in the middle, but the max path
    # (cost 1 per alternating edge, 0.5 to "mix") puts it at an end: the last one.
    longest = make_strategy("path", {}).cycle_order(ctx)
    assert longest[-1] == "mix"


@pytest.mark.parametrize(
    "options",
    [{"objective": "longest"}, {"exact_max_sites": 17}, {"exact_max_sites": True}, {"metric": 3}],
)
def test_path_rejects_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("path", options)
    assert repr(next(iter(options))) in str(info.value)
