"""A learned ordering: a Bayesian ridge surrogate of run quality over order features."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.errors import ConfigError
from ordering.base import cycle_rng
from ordering.gp import OrderGP
from ordering.metrics import metric_option, ranked_metric
from ordering.profile_based import choice, dissimilarity_matrix, label_distributions
from ordering.strategies import Reshuffle

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ordering.base import OrderingContext

_EXHAUSTIVE_MAX = 8
_SAMPLED = 4096
_LAST_SCALE = 2.0
"""Value of the last-site indicator: under the shared ridge prior the last site's
weights get 4 times the prior variance of the others, since which site trains last
explains most of the order effect (30-75% in the ordering lab's order-sensitive cells)."""
GP_AFTER_PER_SITE = 2
"""With ``surrogate = "auto"`` the GP takes over once there are more than this many
probe observations per site."""


def order_features(order: Sequence[int], dissim: Sequence[Sequence[float]]) -> list[float]:
    """Features of one order of sites ``0..k-1``.

    Indicator of the last site, valued 2 (k), pairwise precedence ``+1`` if ``i`` trains before
    ``j`` else ``-1`` for every ``i < j`` (k(k-1)/2), and the mean label dissimilarity
    of neighbours (1).
    """
    row: list[float] = feature_matrix([order], dissim)[0].tolist()
    return row


def feature_matrix(
    orders: Sequence[Sequence[int]], dissim: Sequence[Sequence[float]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """:func:`order_features` of many orders at once, one row each."""
    perms = np.asarray(orders, dtype=np.int64)
    n, k = perms.shape
    pos = np.argsort(perms, axis=1)
    last = np.zeros((n, k))
    last[np.arange(n), perms[:, -1]] = _LAST_SCALE
    i, j = np.triu_indices(k, 1)
    prec = np.where(pos[:, i] < pos[:, j], 1.0, -1.0)
    d = np.asarray(dissim, dtype=np.float64).reshape(k, k)
    neighbours = d[perms[:, :-1], perms[:, 1:]].sum(axis=1) / max(1, k - 1)
    return np.hstack([last, prec, neighbours[:, None]])


@dataclass(frozen=True, kw_only=True, slots=True)
class Observation:
    """One observed quality of one order."""

    order: tuple[int, ...]
    """Site indices into ``ctx.sites``."""
    value: float
    """The observed quality, higher is better."""
    source: int
    """0: a probe run (mean over sites); 1: a cycle of this run (one site's view)."""


def observations(ctx: OrderingContext, metric: str | None = None) -> list[Observation]:
    """What the run has measured about orders, as higher-is-better values.

    ``metric`` is the one to read (None: the run's primary metric), turned
    higher-is-better by its direction (:func:`ordering.metrics.ranked_metric`).

    Probes give the final model's mean validation metric over the sites. A completed
    cycle ``c`` gives the metric of its final model at the first site of cycle
    ``c + 1`` (``metrics_before`` of that hop): one site's noisy view, and only once that
    hop is done. Hops of ``ctx.cycle`` or later are ignored.
    """
    index = {s: i for i, s in enumerate(ctx.sites)}
    metric, sign = ranked_metric(ctx, metric)
    out: list[Observation] = []
    for probe in ctx.probes:
        value = probe.metrics.get(metric)
        if sorted(probe.order) == sorted(ctx.sites) and value is not None and math.isfinite(value):
            out.append(
                Observation(
                    order=tuple(index[s] for s in probe.order), value=sign * value, source=0
                )
            )
    cycles: dict[int, list[Any]] = {}
    for hop in ctx.history:
        if hop.cycle < ctx.cycle:
            cycles.setdefault(hop.cycle, []).append(hop)
    for c, hops in cycles.items():
        nxt = cycles.get(c + 1)
        order = tuple(h.site_id for h in hops)
        if nxt is None or sorted(order) != sorted(ctx.sites):
            continue
        value = nxt[0].metrics_before.get(metric)
        if value is not None and math.isfinite(value):
            out.append(
                Observation(order=tuple(index[s] for s in order), value=sign * value, source=1)
            )
    return out


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class RidgeSurrogate:
    """Bayesian linear regression ``y = x.w + b_source + noise`` with a Gaussian prior on ``w``.

    ``w ~ N(0, s2 / ridge)``; the per-source intercepts have a flat prior (they absorb
    the different scales of probe and cycle observations); ``s2`` is the residual
    variance, floored at ``1e-6``.
    """

    mean: np.ndarray[Any, np.dtype[np.float64]]
    """Posterior mean of ``w`` (intercepts last)."""
    cov: np.ndarray[Any, np.dtype[np.float64]]
    """Posterior covariance of ``w``."""
    num_features: int
    """Length of an order's feature vector."""

    @classmethod
    def fit(
        cls,
        x: np.ndarray[Any, Any],
        source: np.ndarray[Any, Any],
        y: np.ndarray[Any, Any],
        *,
        ridge: float,
    ) -> RidgeSurrogate:
        """Fits the posterior to feature rows ``x``, sources (0 or 1) and values ``y``."""
        n, f = x.shape
        design = np.hstack([x, (source[:, None] == np.arange(2)[None, :]).astype(np.float64)])
        penalty = np.diag([ridge] * f + [1e-9, 1e-9])
        precision = design.T @ design + penalty
        mean = np.linalg.solve(precision, design.T @ y)
        resid = y - design @ mean
        dof = max(1, n - 2)
        s2 = max(1e-6, float(resid @ resid) / dof)
        cov = s2 * np.linalg.inv(precision)
        return cls(mean=mean, cov=(cov + cov.T) / 2, num_features=f)

    def predict(
        self, x: np.ndarray[Any, Any], w: np.ndarray[Any, Any] | None = None
    ) -> np.ndarray[Any, Any]:
        """Predicted probe-scale quality of feature rows ``x`` (with weights ``w``, or the mean)."""
        weights = self.mean if w is None else w
        return np.asarray(
            x @ weights[: self.num_features] + weights[self.num_features], dtype=np.float64
        )

    def sample(self, rng: np.random.Generator) -> np.ndarray[Any, Any]:
        """One draw of the weights from the posterior (Thompson sampling)."""
        return np.asarray(
            rng.multivariate_normal(self.mean, self.cov, method="eigh"), dtype=np.float64
        )


class LearnedOrder:
    """``learned``: search permutations with a surrogate fitted to the run's observations.

    The surrogate (:class:`RidgeSurrogate`) predicts an order's quality from its
    :func:`order_features` (last site, pairwise precedence, neighbour dissimilarity),
    fitted to :func:`observations`. With fewer than ``min_observations`` it explores as
    ``reshuffle`` does (a fresh permutation each cycle, never starting with the site that
    ended the previous cycle), redrawn if it was observed already. Otherwise it returns
    the order with the best predicted quality under the posterior mean (``greedy``) or a
    posterior draw (``thompson``), searched over all orders up to 8 sites, else over
    4096 drawn orders improved by pairwise swaps.

    Two surrogates: the Bayesian ridge above, and a Gaussian process over orders
    (:class:`ordering.gp.OrderGP`: the same linear features plus a Kendall kernel, its
    hyperparameters by marginal likelihood). The ridge is the safer of the two with few
    observations; with many it smooths away what was measured: once every order of 5
    sites was probed it picked worse than the best probe itself (82-85th percentile
    against 87-90th). ``surrogate = "auto"`` (default) uses the ridge up to ``2k``
    probe observations and the GP beyond. Replayed on oracle tables of the ordering lab
    (digits, Dirichlet skew, K = 5, 10 partition seeds, probes on fresh run seeds), the
    chosen order sat at percentiles 85.0, 88.1, 89.4 and 89.4 with 20, 40, 80
    and 120 probes, against 85.0, 85.2, 86.5 and 83.7 with the ridge alone (82.6 with
    10 probes, both); with ``2k`` probes a GP alone was 2-4 points worse.

    Probes (:meth:`next_probe`): the first ``k`` are the ``k`` rotations of one seeded
    random order, so every site trains last once and every pair of sites appears in
    both precedences; each later one is the unprobed order with the best posterior-mean
    prediction, refitted after every probe (once every order was probed, the best
    predicted among the least repeated is probed again). Measured in the ordering lab
    (digits, Dirichlet skew, K = 5, probes on run seeds the final run never uses), 2k
    probes chosen this way put the chosen order at about the 81st-85th percentile and 2k
    uniformly drawn probes at about the 61st; probing all 120 orders once and keeping the
    best reaches about the 89th.

    When it helps: k sites give ``k + k(k-1)/2 + 1`` features (16 for k = 5). With
    probes it needs roughly that many to rank orders well; a live run alone gives one
    noisy observation per cycle (the next cycle's first site), so without probes it is
    no better than ``reshuffle`` for the first ~10 cycles, and in a 1- or 3-cycle run it
    IS ``reshuffle``: that is why it is the run plan's default, which costs nothing
    without probes and uses them when a plan names some. In a live federation the
    probes are earlier runs evaluated at every site (``[ordering] probe_runs``); the lab
    simulates them and reports their cost.

    Options:
        metric: The metric an order's quality is read from; default: the run's primary
            metric (the plan's ``[task] metric``), better by its direction. Any name
            the sites report is accepted; ``loss`` is better when lower, ``accuracy``
            when higher, and any other name by the primary metric's direction.
        explore: ``greedy`` (default) or ``thompson``. Greedy exploits the surrogate's
            mean, the better choice with probes and few cycles; Thompson sampling keeps
            exploring, for long runs without probes, and draws from the ridge posterior.
        surrogate: ``auto`` (default), ``ridge`` or ``gp`` (not with ``thompson``).
        ridge: Prior precision of the weights, a positive number (default 1.0).
        min_observations: Observations needed before the surrogate is used (default 3).

    Randomness comes only from ``cycle_rng(seed, cycle)``.
    """

    name = "learned"
    OPTIONS = frozenset({"metric", "explore", "ridge", "min_observations", "surrogate"})

    def __init__(
        self,
        *,
        metric: str | None = None,
        thompson: bool = False,
        ridge: float = 1.0,
        min_observations: int = 3,
        surrogate: str = "auto",
    ) -> None:
        self.metric = metric
        self.thompson = thompson
        self.ridge = ridge
        self.min_observations = min_observations
        self.surrogate = surrogate

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LearnedOrder:
        """Builds the strategy from plan options (see the class docstring)."""
        metric = metric_option(cls.name, options)
        explore = choice(cls.name, options, "explore", ("greedy", "thompson"))
        surrogate = choice(cls.name, options, "surrogate", ("auto", "ridge", "gp"))
        if surrogate == "gp" and explore == "thompson":
            raise ConfigError(
                "ordering strategy 'learned': option 'surrogate' = 'gp' cannot explore by "
                "'thompson' sampling, which draws from the ridge posterior"
            )
        ridge = options.get("ridge", 1.0)
        if (
            isinstance(ridge, bool)
            or not isinstance(ridge, int | float)
            or not (0 < ridge < math.inf)
        ):
            raise ConfigError(
                "ordering strategy 'learned': option 'ridge' must be a positive number, "
                f"not {ridge!r}"
            )
        least = options.get("min_observations", 3)
        if isinstance(least, bool) or not isinstance(least, int) or least < 1:
            raise ConfigError(
                "ordering strategy 'learned': option 'min_observations' must be a positive "
                f"integer, not {least!r}"
            )
        return cls(
            metric=metric,
            thompson=explore == "thompson",
            ridge=float(ridge),
            min_observations=least,
            surrogate=surrogate,
        )

    def _use_gp(self, obs: Sequence[Observation], k: int) -> bool:
        if len(obs) < 2 or self.thompson or self.surrogate == "ridge":
            return False
        probes = sum(1 for o in obs if o.source == 0)
        return self.surrogate == "gp" or probes > GP_AFTER_PER_SITE * k

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Explores, or returns the surrogate's best order (see the class docstring)."""
        k = len(ctx.sites)
        if k < 2:
            return tuple(ctx.sites)
        rng = cycle_rng(ctx.seed, ctx.cycle)
        obs = observations(ctx, self.metric)
        if len(obs) < self.min_observations:
            seen = {o.order for o in obs}
            order = Reshuffle().cycle_order(ctx)
            if tuple(ctx.sites.index(s) for s in order) not in seen:
                return order
            return tuple(ctx.sites[i] for i in _unseen_order(k, seen, rng))
        dissim = dissimilarity_matrix(ctx.sites, label_distributions(ctx), "tv")
        predict = self._predictor(obs, dissim, k, rng if self.thompson else None)
        best = _search(k, dissim, predict, rng)
        return tuple(ctx.sites[i] for i in best)

    def _predictor(
        self, obs: Sequence[Observation], dissim: Any, k: int, draw_rng: Any = None
    ) -> Callable[[np.ndarray[Any, Any], Sequence[tuple[int, ...]]], np.ndarray[Any, Any]]:
        """The fitted surrogate's quality of orders, as ``predict(feature_rows, orders)``:
        the GP's posterior mean, or the ridge's (a posterior draw from ``draw_rng`` when
        one is given)."""
        x = feature_matrix([o.order for o in obs], dissim)
        y = np.array([o.value for o in obs], dtype=np.float64)
        src = np.array([o.source for o in obs], dtype=np.int64)
        if self._use_gp(obs, k):
            # Probes and cycles measure on different scales: each is centred on its own.
            for source in (0, 1):
                if np.any(src == source):
                    y[src == source] -= y[src == source].mean()
            gp = OrderGP.fit([o.order for o in obs], x, y)
            return lambda rows, orders: gp.predict(orders, rows)
        model = RidgeSurrogate.fit(x, src, y, ridge=self.ridge)
        weights = (
            model.mean
            if draw_rng is None
            else model.sample(np.random.default_rng(draw_rng.getrandbits(64)))
        )
        return lambda rows, _: model.predict(rows, weights)

    def next_probe(self, ctx: OrderingContext, budget: int) -> tuple[str, ...] | None:
        """The next probe run's order (see the class docstring), or None once
        ``len(ctx.probes) >= budget`` or with fewer than two sites."""
        k = len(ctx.sites)
        made = len(ctx.probes)
        if k < 2 or made >= budget:
            return None
        if made < k:
            base = list(range(k))
            cycle_rng(ctx.seed, ctx.cycle).shuffle(base)
            return tuple(ctx.sites[base[(made + 1 + p) % k]] for p in range(k))
        obs = [o for o in observations(ctx, self.metric) if o.source == 0]
        dissim = dissimilarity_matrix(ctx.sites, label_distributions(ctx), "tv")
        predict = self._predictor(obs, dissim, k)
        times: dict[tuple[int, ...], int] = {}
        for o in obs:
            times[o.order] = times.get(o.order, 0) + 1
        fewest = min(times.values()) if len(times) == math.factorial(k) else 0

        def score(rows: np.ndarray[Any, Any], orders: Sequence[tuple[int, ...]]) -> Any:
            values = predict(rows, orders)
            repeated = np.array([times.get(tuple(o), 0) > fewest for o in orders])
            return np.where(repeated, -np.inf, values)

        best = _search(k, dissim, score, cycle_rng(ctx.seed, ctx.cycle))
        return tuple(ctx.sites[i] for i in best)


def _unseen_order(k: int, seen: set[tuple[int, ...]], rng: Any) -> list[int]:
    order = list(range(k))
    for _ in range(64):
        rng.shuffle(order)
        if tuple(order) not in seen:
            break
    return order


def _search(
    k: int,
    dissim: Sequence[Sequence[float]],
    score: Any,
    rng: Any,
) -> tuple[int, ...]:
    """The order of ``0..k-1`` with the highest ``score(feature_rows, orders)``:
    exhaustive up to 8 sites, else the best of 4096 drawn orders improved by pairwise
    swaps."""
    if k <= _EXHAUSTIVE_MAX:
        candidates = list(itertools.permutations(range(k)))
        values = score(feature_matrix(candidates, dissim), candidates)
        return candidates[int(np.argmax(values))]
    pool = []
    for _ in range(_SAMPLED):
        order = list(range(k))
        rng.shuffle(order)
        pool.append(tuple(order))
    values = score(feature_matrix(pool, dissim), pool)
    best = list(pool[int(np.argmax(values))])
    best_value = float(np.max(values))
    improved = True
    while improved:
        improved = False
        for i, j in itertools.combinations(range(k), 2):
            cand = best.copy()
            cand[i], cand[j] = cand[j], cand[i]
            value = float(score(feature_matrix([cand], dissim), [tuple(cand)])[0])
            if value > best_value + 1e-12:
                best, best_value, improved = cand, value, True
    return tuple(best)
