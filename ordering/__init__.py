"""Orders of training: a pure library of strategies over site profiles and hop outcomes.

It does no I/O and imports nothing from ``coordinator`` or ``site_node``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from baton.errors import ConfigError
from ordering.base import HopOutcome, OrderingContext, OrderingStrategy, cycle_rng
from ordering.strategies import FixedOrder, RandomOrder, Reshuffle

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "FixedOrder",
    "HopOutcome",
    "OrderingContext",
    "OrderingStrategy",
    "RandomOrder",
    "Reshuffle",
    "cycle_rng",
    "known_strategies",
    "make_strategy",
]

_FACTORIES: dict[str, Callable[[], OrderingStrategy]] = {
    FixedOrder.name: FixedOrder,
    RandomOrder.name: RandomOrder,
    Reshuffle.name: Reshuffle,
}
# Options each strategy accepts; a name not listed here is a configuration error.
_OPTIONS: dict[str, frozenset[str]] = {name: frozenset() for name in _FACTORIES}


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
        ConfigError: The name is unknown, or an option is not one the strategy accepts.
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
    return factory()
