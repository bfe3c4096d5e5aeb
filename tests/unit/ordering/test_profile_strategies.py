"""Tests for the profile-based strategies: by_size and typicality."""

from __future__ import annotations

import math

import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from ordering import OrderingContext, make_strategy
from ordering.profile_based import dissimilarity, label_distributions, typicality


def _ctx(profiles: dict[str, DataProfile], sites: tuple[str, ...] | None = None) -> OrderingContext:
    return OrderingContext(sites=sites or tuple(profiles), profiles=profiles)


def _hist(*counts: int) -> DataProfile:
    return DataProfile(num_examples=sum(counts), label_histogram=counts)


def test_by_size_sorts_ascending_by_default_and_keeps_ties_in_plan_order() -> None:
    profiles = {
        "a": DataProfile(num_examples=30),
        "b": DataProfile(num_examples=10),
        "c": DataProfile(num_examples=30),
        "d": DataProfile(num_examples=20),
    }
    assert make_strategy("by_size", {}).cycle_order(_ctx(profiles)) == ("b", "d", "a", "c")
    descending = make_strategy("by_size", {"direction": "descending"})
    assert descending.cycle_order(_ctx(profiles)) == ("a", "c", "d", "b")


def test_by_size_counts_a_site_without_profile_as_empty() -> None:
    profiles = {"a": DataProfile(num_examples=5), "b": DataProfile(num_examples=1)}
    ctx = _ctx(profiles, sites=("a", "b", "ghost"))
    assert make_strategy("by_size", {}).cycle_order(ctx) == ("ghost", "b", "a")


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("by_size", {"direction": "up"}, "direction"),
        ("by_size", {"direction": 1}, "direction"),
        ("typicality", {"metric": "kl"}, "metric"),
        ("typicality", {"direction": "sideways"}, "direction"),
    ],
)
def test_bad_option_values_are_config_errors(
    name: str, options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy(name, options)
    assert repr(key) in str(info.value)
    assert repr(name) in str(info.value)


def test_dissimilarities_of_disjoint_and_equal_distributions() -> None:
    for metric in ("tv", "js", "hellinger"):
        assert dissimilarity((1.0, 0.0), (0.0, 1.0), metric) == pytest.approx(1.0)
        assert dissimilarity((0.3, 0.7), (0.3, 0.7), metric) == pytest.approx(0.0, abs=1e-7)
    assert dissimilarity((0.5, 0.5), (1.0, 0.0), "tv") == pytest.approx(0.5)
    # JS of (1/2, 1/2) and (1, 0) in bits: H(3/4, 1/4) - 1/2 H(1/2, 1/2).
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert dissimilarity((0.5, 0.5), (1.0, 0.0), "js") == pytest.approx(h - 0.5)


def test_label_distributions_pad_ragged_histograms_and_skip_empty_ones() -> None:
    profiles = {"a": _hist(1, 3), "b": _hist(2, 0, 2), "c": _hist(0, 0), "d": _hist()}
    dists = label_distributions(_ctx(profiles))
    assert dists == {"a": (0.25, 0.75, 0.0), "b": (0.5, 0.0, 0.5)}


def test_typicality_is_one_minus_mean_dissimilarity_to_the_others() -> None:
    profiles = {"a": _hist(10, 0), "b": _hist(5, 5), "c": _hist(0, 10)}
    typ = typicality(_ctx(profiles), "tv")
    assert typ == pytest.approx({"a": 1 - 0.75, "b": 1 - 0.5, "c": 1 - 0.75})


def test_typicality_orders_the_outlier_first_and_the_most_typical_last() -> None:
    profiles = {
        "typical": _hist(25, 25, 25, 25),
        "outlier": _hist(0, 0, 0, 100),
        "skew-0": _hist(70, 10, 10, 10),
        "skew-1": _hist(10, 70, 10, 10),
    }
    ascending = make_strategy("typicality", {}).cycle_order(_ctx(profiles))
    assert ascending[0] == "outlier"
    assert ascending[-1] == "typical"
    typ = typicality(_ctx(profiles), "tv")
    assert [typ[s] for s in ascending] == sorted(typ.values())
    descending = make_strategy("typicality", {"direction": "descending"})
    # skew-0 and skew-1 tie: they keep the plan's order in both directions.
    assert ascending == ("outlier", "skew-0", "skew-1", "typical")
    assert descending.cycle_order(_ctx(profiles)) == ("typical", "skew-0", "skew-1", "outlier")


def test_typicality_puts_sites_without_histograms_first_in_plan_order() -> None:
    profiles = {"a": _hist(9, 1), "b": _hist(5, 5), "c": _hist(4, 6)}
    ctx = _ctx(profiles, sites=("x", "a", "y", "b", "c"))
    for direction in ("ascending", "descending"):
        order = make_strategy("typicality", {"direction": direction}).cycle_order(ctx)
        assert order[:2] == ("x", "y")
