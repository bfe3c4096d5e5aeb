"""Tests for greedy_loss: ordering by the incoming model's recorded validation loss."""

from __future__ import annotations

import pytest

from baton.errors import ConfigError
from ordering import HopOutcome, OrderingContext, make_strategy

SITES = ("a", "b", "c", "d")


def _hop(cycle: int, site: str, loss: float, accuracy: float = 0.5) -> HopOutcome:
    return HopOutcome(
        cycle=cycle,
        site_id=site,
        metrics_before={"loss": loss, "accuracy": accuracy},
        metrics_after={"loss": 0.1, "accuracy": 0.9},
    )


def _ctx(history: tuple[HopOutcome, ...], cycle: int = 1) -> OrderingContext:
    return OrderingContext(sites=SITES, history=history, cycle=cycle, seed=3)


def test_without_metrics_it_keeps_the_plan_order() -> None:
    assert make_strategy("greedy_loss", {}).cycle_order(_ctx((), cycle=0)) == SITES


def test_hardest_site_first_by_loss_or_accuracy() -> None:
    history = (
        _hop(0, "a", 0.9, accuracy=0.2),
        _hop(0, "b", 2.0, accuracy=0.1),
        _hop(0, "c", 0.1, accuracy=0.9),
        _hop(0, "d", 0.5, accuracy=0.6),
    )
    assert make_strategy("greedy_loss", {}).cycle_order(_ctx(history)) == ("b", "a", "d", "c")
    by_acc = make_strategy("greedy_loss", {"metric": "accuracy"})
    assert by_acc.cycle_order(_ctx(history)) == ("b", "a", "d", "c")
    last = make_strategy("greedy_loss", {"direction": "hardest_last"})
    assert last.cycle_order(_ctx(history)) == ("c", "d", "a", "b")


def test_uses_the_newest_value_and_treats_unmeasured_sites_as_hardest() -> None:
    # Cycle 1 is planned while its predecessor's last hop ("d") is still training.
    history = (
        _hop(0, "a", 0.9),
        _hop(0, "b", 2.0),
        _hop(0, "c", 0.1),
        _hop(1, "b", 0.05),  # newer than cycle 0's 2.0
        _hop(1, "c", 0.3),
        _hop(1, "a", 0.2),
    )
    order = make_strategy("greedy_loss", {"metric": "loss"}).cycle_order(_ctx(history, cycle=2))
    assert order == ("d", "c", "a", "b")


def test_ignores_hops_of_the_cycle_being_planned_and_non_finite_values() -> None:
    base = (_hop(0, "a", 0.9), _hop(0, "b", 2.0), _hop(0, "c", 0.1), _hop(0, "d", 0.5))
    strategy = make_strategy("greedy_loss", {"metric": "loss"})
    planned = strategy.cycle_order(_ctx(base))
    after_restart = (*base, _hop(1, "c", 99.0), _hop(1, "a", float("nan")))
    assert strategy.cycle_order(_ctx(after_restart)) == planned
    poisoned = (*base, _hop(1, "c", float("inf")))
    assert strategy.cycle_order(_ctx(poisoned, cycle=2)) == planned


def test_rejects_bad_options() -> None:
    for metric in ("", 3, "val acc"):
        with pytest.raises(ConfigError, match="option 'metric' must be the name of a metric"):
            make_strategy("greedy_loss", {"metric": metric})
    with pytest.raises(ConfigError, match="'direction'"):
        make_strategy("greedy_loss", {"direction": "hardest_next"})


def _perplexity(cycle: int, site: str, perplexity: float) -> HopOutcome:
    return HopOutcome(
        cycle=cycle,
        site_id=site,
        metrics_before={"perplexity": perplexity, "loss": 1.0},
        metrics_after={"perplexity": 2.0, "loss": 0.5},
    )


def test_a_lower_is_better_primary_metric_puts_the_highest_value_first() -> None:
    history = tuple(
        _perplexity(0, s, p) for s, p in zip(SITES, (9.0, 30.0, 4.0, 12.0), strict=True)
    )
    lower = OrderingContext(
        sites=SITES, history=history, cycle=1, metric="perplexity", higher_is_better=False
    )
    assert make_strategy("greedy_loss", {}).cycle_order(lower) == ("b", "d", "a", "c")
    # The same values read as higher-is-better flip the ranking.
    higher = OrderingContext(sites=SITES, history=history, cycle=1, metric="perplexity")
    assert make_strategy("greedy_loss", {}).cycle_order(higher) == ("c", "a", "d", "b")
    # An explicit option names any reported metric; it takes the primary's direction.
    explicit = make_strategy("greedy_loss", {"metric": "perplexity"})
    ctx = OrderingContext(sites=SITES, history=history, cycle=1, higher_is_better=False)
    assert explicit.cycle_order(ctx) == ("b", "d", "a", "c")
