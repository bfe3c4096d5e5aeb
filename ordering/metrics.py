"""Which hop metric a strategy ranks by, and which way is better."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from baton.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ordering.base import OrderingContext

KNOWN_DIRECTIONS: dict[str, bool] = {"loss": False, "accuracy": True}
"""Metrics whose direction is known whatever the run's primary metric (True: higher is
better): every task's training loop reports ``loss``, and classifiers ``accuracy``."""

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")


def metric_option(strategy: str, options: Mapping[str, Any]) -> str | None:
    """Reads a strategy's ``metric`` option: a metric name, or None (the run's primary metric).

    Raises:
        ConfigError: The value is not a metric name (1 to 64 letters, digits, ``_.-``).
    """
    value = options.get("metric")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64 or set(value) - _NAME_CHARS:
        raise ConfigError(
            f"ordering strategy {strategy!r}: option 'metric' must be the name of a metric "
            f"the sites report (e.g. 'loss', 'accuracy', 'perplexity'), not {value!r}"
        )
    return value


def ranked_metric(ctx: OrderingContext, metric: str | None) -> tuple[str, float]:
    """The metric to rank by and its sign: values times the sign are higher-is-better.

    Args:
        ctx: The run's context; ``ctx.metric`` and ``ctx.higher_is_better`` describe the
            run's primary metric.
        metric: A strategy's ``metric`` option, or None for the primary metric.

    Returns:
        ``(name, sign)``: the primary metric's direction for the primary metric, the known
        direction of ``loss`` (lower is better) and ``accuracy`` (higher), else the
        primary metric's direction.
    """
    name = ctx.metric if metric is None else metric
    if name == ctx.metric:
        better_high = ctx.higher_is_better
    else:
        better_high = KNOWN_DIRECTIONS.get(name, ctx.higher_is_better)
    return name, 1.0 if better_high else -1.0
