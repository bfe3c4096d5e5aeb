"""Greedy ordering by the incoming model's score at each site, from recorded hop metrics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ordering.metrics import metric_option, ranked_metric
from ordering.profile_based import choice

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ordering.base import OrderingContext


def latest_incoming(ctx: OrderingContext, metric: str) -> dict[str, float]:
    """Each site's newest ``metrics_before[metric]`` from cycles before ``ctx.cycle``.

    Hops of the cycle being planned (present after a restart) are ignored, so a
    recomputed schedule is the one first made. Non-finite values are ignored.
    """
    out: dict[str, float] = {}
    for hop in ctx.history:
        if hop.cycle >= ctx.cycle or hop.site_id not in ctx.sites:
            continue
        value = hop.metrics_before.get(metric)
        if value is not None and math.isfinite(value):
            out[hop.site_id] = float(value)
    return out


class GreedyIncomingLoss:
    """``greedy_loss``: the site where the incoming model did worst trains first ("hardest next").

    What it can do without a probe: a real coordinator knows, for every completed hop,
    the incoming model's validation metrics at that site (``metrics_before``). This
    strategy ranks the sites by the newest such value from earlier cycles: the hardest
    site (the worst value of the ranked metric: lowest accuracy, highest loss or
    perplexity) goes first and the easiest last. That value
    was measured on the model as it arrived at that site last cycle, not on the model
    that will start this cycle, and it cannot be updated between the hops of a cycle.

    What it cannot do: the greedy rule proper (ask every remaining site, before each hop,
    how the current model fares, and send it to the worst) needs every remaining site
    to evaluate the model between hops; Baton has sites evaluate only a finished run's
    final model (``[run] evaluate_at_sites``). In cycle 0 no
    metrics exist and the plan's order is used; a site never measured (the last site of
    the previous cycle is still training when the next cycle is planned) keeps its
    newest older value, or, if it has none, counts as hardest.

    Options:
        metric: The metric to rank by; default: the run's primary metric (the plan's
            ``[task] metric``), worse by its direction. Any name the sites report is
            accepted; ``loss`` is worse when higher, ``accuracy`` when lower, and any
            other name by the primary metric's direction.
        direction: ``hardest_first`` (default) or ``hardest_last``.

    Deterministic given the history; ties keep the plan's order.
    """

    name = "greedy_loss"
    OPTIONS = frozenset({"metric", "direction"})

    def __init__(self, *, metric: str | None = None, hardest_first: bool = True) -> None:
        self.metric = metric
        self.hardest_first = hardest_first

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GreedyIncomingLoss:
        """Builds the strategy from plan options (see the class docstring)."""
        metric = metric_option(cls.name, options)
        direction = choice(cls.name, options, "direction", ("hardest_first", "hardest_last"))
        return cls(metric=metric, hardest_first=direction == "hardest_first")

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns the sites from hardest to easiest (or the reverse)."""
        metric, better = ranked_metric(ctx, self.metric)
        seen = latest_incoming(ctx, metric)
        if not seen:
            return tuple(ctx.sites)
        sign = -better  # hardness: higher is worse

        def hardness(i: int) -> tuple[float, int]:
            value = seen.get(ctx.sites[i])
            h = math.inf if value is None else sign * value
            return (-h if self.hardest_first else h), i

        return tuple(ctx.sites[i] for i in sorted(range(len(ctx.sites)), key=hardness))
