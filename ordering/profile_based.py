"""Orders from the sites' published profiles: by size, and by label-histogram typicality."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from baton.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ordering.base import OrderingContext

METRICS = ("tv", "js", "hellinger")
"""Dissimilarities between two label distributions, each in ``[0, 1]``."""


def choice(name: str, options: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    """Reads a string option that must be one of ``allowed``; the first is the default.

    Raises:
        ConfigError: The value is not a string from ``allowed``.
    """
    value = options.get(key, allowed[0])
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(
            f"ordering strategy {name!r}: option {key!r} must be one of "
            f"{', '.join(allowed)}, not {value!r}"
        )
    return value


def label_distributions(ctx: OrderingContext) -> dict[str, tuple[float, ...]]:
    """Each site's label distribution from its published histogram.

    Histograms of different lengths are padded with zeros. A site without a profile, or
    whose histogram is empty or all zero, is left out.
    """
    hists = {
        s: ctx.profiles[s].label_histogram
        for s in ctx.sites
        if s in ctx.profiles and sum(ctx.profiles[s].label_histogram) > 0
    }
    width = max((len(h) for h in hists.values()), default=0)
    out: dict[str, tuple[float, ...]] = {}
    for site, hist in hists.items():
        total = float(sum(hist))
        padded = [*hist, *([0] * (width - len(hist)))]
        out[site] = tuple(max(0.0, v) / total for v in padded)
    return out


def dissimilarity(p: tuple[float, ...], q: tuple[float, ...], metric: str) -> float:
    """Dissimilarity of two distributions of equal length, in ``[0, 1]``.

    ``tv``: total variation, ``0.5 * sum |p - q|``; ``js``: Jensen-Shannon divergence in
    bits; ``hellinger``: ``sqrt(1 - sum sqrt(p q))``.
    """
    if metric == "tv":
        return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
    if metric == "hellinger":
        bc = sum(math.sqrt(a * b) for a, b in zip(p, q, strict=True))
        return math.sqrt(max(0.0, 1.0 - bc))
    if metric == "js":
        js = 0.0
        for a, b in zip(p, q, strict=True):
            m = 0.5 * (a + b)
            if a > 0:
                js += 0.5 * a * math.log2(a / m)
            if b > 0:
                js += 0.5 * b * math.log2(b / m)
        return min(1.0, max(0.0, js))
    raise ValueError(f"unknown metric {metric!r}")


def dissimilarity_matrix(
    sites: tuple[str, ...], dists: Mapping[str, tuple[float, ...]], metric: str
) -> list[list[float]]:
    """Pairwise dissimilarities of ``sites``; a pair with an unknown distribution scores 0.5."""
    k = len(sites)
    matrix = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            a, b = dists.get(sites[i]), dists.get(sites[j])
            d = 0.5 if a is None or b is None else dissimilarity(a, b, metric)
            matrix[i][j] = matrix[j][i] = d
    return matrix


def typicality(ctx: OrderingContext, metric: str) -> dict[str, float]:
    """How typical each site's labels are: one minus its mean dissimilarity to the others.

    This is Li & Hiratani's (2025) typicality of a task, with label distributions as the
    tasks' statistics. Sites without a usable histogram get ``nan``.
    """
    dists = label_distributions(ctx)
    known = [s for s in ctx.sites if s in dists]
    out = {s: math.nan for s in ctx.sites}
    for site in known:
        others = [dissimilarity(dists[site], dists[o], metric) for o in known if o != site]
        out[site] = 1.0 - (sum(others) / len(others) if others else 0.0)
    return out


class BySize:
    """``by_size``: sites sorted by their published number of training examples.

    Options:
        direction: ``ascending`` (default: the largest site trains last, the forgetting
            argument's choice) or ``descending``.

    Ties keep the plan's order. Sites without a profile count as size 0. Deterministic:
    the seed, cycle and history are not used.
    """

    name = "by_size"
    OPTIONS = frozenset({"direction"})

    def __init__(self, *, descending: bool = False) -> None:
        self.descending = descending

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BySize:
        """Builds the strategy from plan options (see the class docstring)."""
        direction = choice(cls.name, options, "direction", ("ascending", "descending"))
        return cls(descending=direction == "descending")

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns the sites sorted by size; ties in plan order."""
        sign = -1 if self.descending else 1

        def size(i: int) -> tuple[int, int]:
            profile = ctx.profiles.get(ctx.sites[i])
            return sign * (profile.num_examples if profile else 0), i

        return tuple(ctx.sites[i] for i in sorted(range(len(ctx.sites)), key=size))


class ByTypicality:
    """``typicality``: least representative first, most typical last (Li & Hiratani 2025).

    A site's typicality is one minus the mean dissimilarity of its label distribution to
    the other sites' (:func:`typicality`).

    Options:
        direction: ``ascending`` (default: least representative first, most typical
            last; the paper's "periphery to core" rule) or ``descending``.
        metric: ``tv`` (default), ``js`` or ``hellinger`` (:func:`dissimilarity`).

    Sites without a usable histogram come first, in plan order, whatever the direction;
    ties keep the plan's order. Deterministic.
    """

    name = "typicality"
    OPTIONS = frozenset({"direction", "metric"})

    def __init__(self, *, descending: bool = False, metric: str = "tv") -> None:
        self.descending = descending
        self.metric = metric

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ByTypicality:
        """Builds the strategy from plan options (see the class docstring)."""
        direction = choice(cls.name, options, "direction", ("ascending", "descending"))
        metric = choice(cls.name, options, "metric", METRICS)
        return cls(descending=direction == "descending", metric=metric)

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns the sites sorted by typicality."""
        typ = typicality(ctx, self.metric)
        sign = -1.0 if self.descending else 1.0

        def key(i: int) -> tuple[int, float, int]:
            t = typ[ctx.sites[i]]
            return (0, 0.0, i) if math.isnan(t) else (1, sign * round(t, 12), i)

        return tuple(ctx.sites[i] for i in sorted(range(len(ctx.sites)), key=key))
