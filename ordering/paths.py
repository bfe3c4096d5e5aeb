"""Paths through the sites that maximize or minimize neighbour dissimilarity of labels."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from baton.errors import ConfigError
from ordering.profile_based import (
    METRICS,
    choice,
    dissimilarity_matrix,
    label_distributions,
    typicality,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ordering.base import OrderingContext

_EPS = 1e-12
_MAX_EXACT = 16


def path_cost(path: Sequence[int], d: Sequence[Sequence[float]]) -> float:
    """Sum of ``d`` over consecutive pairs of ``path``."""
    return sum(d[a][b] for a, b in itertools.pairwise(path))


def exact_path(d: Sequence[Sequence[float]]) -> list[int]:
    """The open path through all nodes of least total ``d`` (Held-Karp, O(2^k k^2)).

    Ties go to the path found first (lowest end node, then lowest predecessor).
    """
    k = len(d)
    if k <= 2:
        return list(range(k))
    full = 1 << k
    cost = [[math.inf] * k for _ in range(full)]
    parent = [[-1] * k for _ in range(full)]
    for j in range(k):
        cost[1 << j][j] = 0.0
    for mask in range(1, full):
        row = cost[mask]
        for j in range(k):
            base = row[j]
            if base == math.inf:
                continue
            for n in range(k):
                if mask & (1 << n):
                    continue
                nxt = mask | (1 << n)
                value = base + d[j][n]
                if value < cost[nxt][n] - _EPS:
                    cost[nxt][n] = value
                    parent[nxt][n] = j
    final = cost[full - 1]
    best = min(final)
    last = next(j for j in range(k) if final[j] <= best + _EPS)
    path, mask = [last], full - 1
    while parent[mask][path[-1]] >= 0:
        prev = parent[mask][path[-1]]
        mask &= ~(1 << path[-1])
        path.append(prev)
    return path[::-1]


def two_opt_path(d: Sequence[Sequence[float]]) -> list[int]:
    """A locally optimal open path of low total ``d``: greedy start, then 2-opt moves.

    The start is the best nearest-neighbour path over all start nodes; a move reverses a
    segment (ends included) while that lowers the cost by more than 1e-12.
    """
    k = len(d)
    best: list[int] = []
    best_cost = math.inf
    for start in range(k):
        path, left = [start], set(range(k)) - {start}
        while left:
            nxt = min(left, key=lambda n: (d[path[-1]][n], n))
            path.append(nxt)
            left.remove(nxt)
        c = path_cost(path, d)
        if c < best_cost - _EPS:
            best, best_cost = path, c
    improved = True
    while improved:
        improved = False
        for i in range(k - 1):
            for j in range(i + 1, k):
                before = (d[best[i - 1]][best[i]] if i > 0 else 0.0) + (
                    d[best[j]][best[j + 1]] if j < k - 1 else 0.0
                )
                after = (d[best[i - 1]][best[j]] if i > 0 else 0.0) + (
                    d[best[i]][best[j + 1]] if j < k - 1 else 0.0
                )
                if after < before - _EPS:
                    best[i : j + 1] = best[i : j + 1][::-1]
                    improved = True
    return best


class DissimilarityPath:
    """``path``: an order whose neighbours are as dissimilar (or similar) as possible.

    The cost of an order is the sum of the label-distribution dissimilarities of
    consecutive sites. Li & Hiratani (2025) find that chaining dissimilar tasks (the
    "max-path" rule) forgets least.

    Options:
        objective: ``max`` (default: dissimilar neighbours) or ``min``.
        metric: ``tv`` (default), ``js`` or ``hellinger``.
        exact_max_sites: Largest number of sites solved exactly by Held-Karp (default 9,
            at most 16); larger runs use a greedy path improved by 2-opt.

    A path and its reverse cost the same: the one whose last site is the more typical
    is returned (most typical last). Sites without a usable histogram are 0.5 from
    everyone. Deterministic.
    """

    name = "path"
    OPTIONS = frozenset({"objective", "metric", "exact_max_sites"})

    def __init__(self, *, maximize: bool = True, metric: str = "tv", exact_max: int = 9) -> None:
        self.maximize = maximize
        self.metric = metric
        self.exact_max = exact_max

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DissimilarityPath:
        """Builds the strategy from plan options (see the class docstring)."""
        objective = choice(cls.name, options, "objective", ("max", "min"))
        metric = choice(cls.name, options, "metric", METRICS)
        exact = options.get("exact_max_sites", 9)
        if isinstance(exact, bool) or not isinstance(exact, int) or not 0 <= exact <= _MAX_EXACT:
            raise ConfigError(
                f"ordering strategy {cls.name!r}: option 'exact_max_sites' must be an integer "
                f"in [0, {_MAX_EXACT}], not {exact!r}"
            )
        return cls(maximize=objective == "max", metric=metric, exact_max=exact)

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns the best path found, oriented most typical last."""
        sites = tuple(ctx.sites)
        if len(sites) < 2:
            return sites
        d = dissimilarity_matrix(sites, label_distributions(ctx), self.metric)
        if self.maximize:
            d = [[-v for v in row] for row in d]
        path = exact_path(d) if len(sites) <= self.exact_max else two_opt_path(d)
        typ = typicality(ctx, self.metric)
        first, last = typ[sites[path[0]]], typ[sites[path[-1]]]
        first = -math.inf if math.isnan(first) else first
        last = -math.inf if math.isnan(last) else last
        if first > last + _EPS or (abs(first - last) <= _EPS and path[0] > path[-1]):
            path.reverse()
        return tuple(sites[i] for i in path)
