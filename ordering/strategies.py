"""The built-in ordering strategies: fixed, random, and reshuffle."""

from __future__ import annotations

from ordering.base import OrderingContext, cycle_rng


class FixedOrder:
    """``fixed``: the plan's order, every cycle."""

    name = "fixed"

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns ``ctx.sites`` unchanged."""
        return tuple(ctx.sites)


class RandomOrder:
    """``random``: an independent, uniformly drawn permutation each cycle."""

    name = "random"

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Shuffles the sites with the cycle's generator (``cycle_rng(seed, cycle)``)."""
        order = list(ctx.sites)
        cycle_rng(ctx.seed, ctx.cycle).shuffle(order)
        return tuple(order)


class Reshuffle:
    """``reshuffle``: a fresh permutation each cycle, never repeating a site across cycles.

    Constraints: the first site of a cycle MUST differ from the last site of the previous
    cycle, unless the run has a single site. Permutations are drawn uniformly among those
    allowed, by redrawing from the cycle's generator until one qualifies.

    The previous cycle's last site is read from ``ctx.history`` when it holds that whole
    cycle. Otherwise (the coordinator plans cycle ``c`` while the last hop of ``c - 1`` is
    still training, so that hop is not yet an outcome) it is recomputed: this strategy is a
    pure function of ``(sites, seed, cycle)`` and the newest whole cycle in the history,
    so the order it gave that cycle is exactly what the coordinator scheduled.
    """

    name = "reshuffle"

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Draws orders from ``cycle_rng(seed, cycle)`` until the first site is allowed."""
        anchor, previous = _newest_whole_cycle(ctx)
        for cycle in range(anchor + 1, ctx.cycle):
            previous = _draw(ctx.sites, ctx.seed, cycle, previous)[-1]
        return _draw(ctx.sites, ctx.seed, ctx.cycle, previous)


def _draw(sites: tuple[str, ...], seed: int, cycle: int, previous: str | None) -> tuple[str, ...]:
    rng = cycle_rng(seed, cycle)
    order = list(sites)
    rng.shuffle(order)
    if len(order) < 2 or previous not in order:
        return tuple(order)
    # Each draw fails with probability 1/len(order) <= 1/2, so this ends quickly.
    while order[0] == previous:
        rng.shuffle(order)
    return tuple(order)


def _newest_whole_cycle(ctx: OrderingContext) -> tuple[int, str | None]:
    """The newest cycle before ``ctx.cycle`` that the history holds in full, and its last site.

    Returns ``(-1, None)`` if there is none.
    """
    counts: dict[int, int] = {}
    last: dict[int, str] = {}
    for outcome in ctx.history:
        if outcome.cycle < ctx.cycle:
            counts[outcome.cycle] = counts.get(outcome.cycle, 0) + 1
            last[outcome.cycle] = outcome.site_id
    whole = [c for c, n in counts.items() if n >= len(ctx.sites)]
    if not whole or not ctx.sites:
        return -1, None
    newest = max(whole)
    return newest, last[newest]
