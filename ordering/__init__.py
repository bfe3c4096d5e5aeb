"""Orders of training: a pure library of strategies over site profiles and hop outcomes.

It does no I/O and imports nothing from ``coordinator`` or ``site_node``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from baton.errors import ConfigError
from ordering.adaptive import GreedyIncomingLoss
from ordering.base import (
    HopOutcome,
    OrderingContext,
    OrderingStrategy,
    ProbeOutcome,
    ProbePlanner,
    cycle_rng,
)
from ordering.learned import LearnedOrder
from ordering.paths import DissimilarityPath
from ordering.profile_based import BySize, ByTypicality
from ordering.strategies import FixedOrder, RandomOrder, Reshuffle

__all__ = [
    "BySize",
    "ByTypicality",
    "DissimilarityPath",
    "FixedOrder",
    "GreedyIncomingLoss",
    "HopOutcome",
    "LearnedOrder",
    "OrderingContext",
    "OrderingStrategy",
    "ProbeOutcome",
    "ProbePlanner",
    "RandomOrder",
    "Reshuffle",
    "cycle_rng",
    "known_strategies",
    "make_strategy",
]

_Factory = Callable[[Mapping[str, Any]], OrderingStrategy]
_FACTORIES: dict[str, _Factory] = {
    FixedOrder.name: lambda _: FixedOrder(),
    RandomOrder.name: lambda _: RandomOrder(),
    Reshuffle.name: lambda _: Reshuffle(),
    BySize.name: BySize.from_options,
    ByTypicality.name: ByTypicality.from_options,
    DissimilarityPath.name: DissimilarityPath.from_options,
    GreedyIncomingLoss.name: GreedyIncomingLoss.from_options,
    LearnedOrder.name: LearnedOrder.from_options,
}
# Options each strategy accepts; a name not listed here is a configuration error.
_OPTIONS: dict[str, frozenset[str]] = {
    FixedOrder.name: frozenset(),
    RandomOrder.name: frozenset(),
    Reshuffle.name: frozenset(),
    BySize.name: BySize.OPTIONS,
    ByTypicality.name: ByTypicality.OPTIONS,
    DissimilarityPath.name: DissimilarityPath.OPTIONS,
    GreedyIncomingLoss.name: GreedyIncomingLoss.OPTIONS,
    LearnedOrder.name: LearnedOrder.OPTIONS,
}


def known_strategies() -> tuple[str, ...]:
    """Returns the names of every registered strategy, in a stable order."""
    return tuple(_FACTORIES)


def make_strategy(name: str, options: Mapping[str, Any]) -> OrderingStrategy:
    """Builds a strategy from its plan name and options.

    Args:
        name: A name from ``known_strategies()``.
        options: The plan's ``ordering.options``.

    Returns:
        A new strategy.

    Raises:
        ConfigError: The name is unknown, an option is not one the strategy accepts, or
            an option's value is invalid.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown ordering strategy {name!r}; known: {', '.join(known_strategies())}"
        )
    unknown = sorted(set(options) - _OPTIONS[name])
    if unknown:
        accepted = ", ".join(sorted(_OPTIONS[name])) or "none"
        raise ConfigError(
            f"ordering strategy {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted: {accepted}"
        )
    return factory(options)
