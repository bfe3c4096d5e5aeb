"""The oracle: final accuracy of every order (or a uniform sample), and order statistics."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.errors import ConfigError
from baton.ml.models import plan_model
from baton.ml.trainer import evaluate
from sim.lab.batched import HOP_METRICS, pooled_val, supports_batched, train_orders_batched
from sim.lab.metric import require_scored_metric
from sim.simulate import simulate_sequential

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.tasks import Federation

EXHAUSTIVE_MAX_SITES = 6
"""Up to this many sites every order is evaluated (6! = 720)."""
SAMPLED_ORDERS = 720
"""Orders drawn uniformly, without replacement, beyond ``EXHAUSTIVE_MAX_SITES``."""


def candidate_orders(
    sites: Sequence[str],
    *,
    seed: int = 0,
    sample_size: int = SAMPLED_ORDERS,
    exhaustive_max_sites: int = EXHAUSTIVE_MAX_SITES,
) -> tuple[tuple[str, ...], ...]:
    """All orders of ``sites`` (in ``itertools.permutations`` order) for up to
    ``exhaustive_max_sites`` sites or up to ``sample_size`` orders; beyond, ``sample_size``
    distinct orders drawn uniformly with ``numpy`` seed ``seed``."""
    k = len(sites)
    if k <= exhaustive_max_sites or math.factorial(k) <= sample_size:
        return tuple(itertools.permutations(sites))
    rng = np.random.default_rng(seed)
    if k <= 8:
        every = list(itertools.permutations(sites))
        pick = rng.choice(len(every), size=sample_size, replace=False)
        return tuple(every[i] for i in sorted(pick))
    drawn: dict[tuple[str, ...], None] = {}
    while len(drawn) < sample_size:
        drawn[tuple(sites[i] for i in rng.permutation(k))] = None
    return tuple(drawn)


def plan_orders(
    sites: Sequence[str], *, seed: int, max_orders: int | None = None
) -> tuple[tuple[str, ...], ...]:
    """The candidate orders of a trial: ``sim.lab.oracle.candidate_orders``, or with
    ``max_orders`` every order when there are at most that many and ``max_orders`` drawn
    with ``seed`` otherwise.

    Raises:
        ConfigError: ``max_orders`` is below 2.
    """
    if max_orders is None:
        return candidate_orders(sites, seed=seed)
    if max_orders < 2:
        raise ConfigError(f"--max-orders must be at least 2, not {max_orders}")
    return candidate_orders(sites, seed=seed, sample_size=max_orders, exhaustive_max_sites=0)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class OrderScores:
    """Final accuracies of many orders over repetitions that share initial weights."""

    orders: tuple[tuple[str, ...], ...]
    """The orders; each is repeated in every cycle."""
    seeds: tuple[int, ...]
    """Run seed of each repetition: initial weights and hop seeds, shared by all orders."""
    test: np.ndarray[Any, np.dtype[np.float64]]
    """Test accuracy, ``[order, repetition]``."""
    val: np.ndarray[Any, np.dtype[np.float64]]
    """Pooled validation accuracy of the sites, ``[order, repetition]``."""
    val_loss: np.ndarray[Any, np.dtype[np.float64]]
    """Pooled validation loss (mean cross-entropy), ``[order, repetition]``."""
    before: np.ndarray[Any, np.dtype[np.float64]]
    """``[order, repetition, hop, metric]``: each hop's incoming model on its site's
    validation split, metrics as ``sim.lab.batched.HOP_METRICS``."""
    after: np.ndarray[Any, np.dtype[np.float64]]
    """``[order, repetition, hop, metric]``: each hop's outgoing model, likewise."""

    def index(self, order: Sequence[str]) -> int | None:
        """Row of ``order``, or None if it was not evaluated."""
        try:
            return self.orders.index(tuple(order))
        except ValueError:
            return None


def evaluate_orders(
    plan: RunPlan,
    federation: Federation,
    orders: Sequence[Sequence[str]],
    seeds: Sequence[int],
    *,
    batched: bool = True,
) -> OrderScores:
    """Trains every order once per seed (``plan.run.seed`` replaced by each seed).

    With ``batched`` (and a plan :func:`supports_batched` accepts) all orders of a seed
    train together; otherwise one by one with :func:`simulate_sequential`.

    Raises:
        ConfigError: The plan's primary metric is not accuracy, which every order is
            scored by (``sim.lab.metric.require_scored_metric``).
    """
    require_scored_metric(plan, "the ordering lab's oracle")
    rows = tuple(tuple(o) for o in orders)
    hops = len(rows[0]) * plan.run.cycles if rows else 0
    test = np.zeros((len(rows), len(seeds)))
    val = np.zeros_like(test)
    val_loss = np.zeros_like(test)
    before = np.zeros((len(rows), len(seeds), hops, len(HOP_METRICS)))
    after = np.zeros_like(before)
    pooled = pooled_val(federation)
    for r, seed in enumerate(seeds):
        rep = dataclasses.replace(plan, run=dataclasses.replace(plan.run, seed=seed))
        if batched and supports_batched(rep):
            acc = train_orders_batched(rep, federation, rows)
            test[:, r], val[:, r], val_loss[:, r] = acc.test, acc.val, acc.val_loss
            before[:, r], after[:, r] = acc.before, acc.after
            continue
        for i, order in enumerate(rows):
            result = simulate_sequential(rep, federation, [order] * rep.run.cycles)
            test[i, r] = result.test_metrics["accuracy"]
            val[i, r], val_loss[i, r] = pooled_metrics(rep, federation, result.state, pooled)
            for h, hop in enumerate(result.hops):
                before[i, r, h] = [hop.metrics_before[m] for m in HOP_METRICS]
                after[i, r, h] = [hop.metrics_after[m] for m in HOP_METRICS]
    return OrderScores(
        orders=rows,
        seeds=tuple(seeds),
        test=test,
        val=val,
        val_loss=val_loss,
        before=before,
        after=after,
    )


def pooled_metrics(
    plan: RunPlan, federation: Federation, state: Any, pooled: Any
) -> tuple[float, float]:
    """Accuracy and loss of the model ``state`` (built as ``plan`` says) on ``pooled``."""
    model = plan_model(plan, federation.schema)
    model.load_state_dict(state)
    metrics = evaluate(model, pooled)
    return metrics["accuracy"], metrics["loss"]


def percentile_of(value: float, population: Sequence[float] | np.ndarray[Any, Any]) -> float:
    """Percentile rank of ``value`` in ``population``: ``100 * (below + equal / 2) / n``."""
    pop = np.asarray(population, dtype=np.float64)
    below = float(np.sum(pop < value - 1e-12))
    equal = float(np.sum(np.abs(pop - value) <= 1e-12))
    return 100.0 * (below + equal / 2) / len(pop)


def expected_range(n: int) -> float:
    """Expected ``max - min`` of ``n`` independent standard normal draws."""
    if n < 2:
        return 0.0
    x = np.linspace(-9.0, 9.0, 20001)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    return float(np.trapezoid(1.0 - cdf**n - (1.0 - cdf) ** n, x))


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderEffect:
    """How much order matters in one trial, against repetition noise."""

    gap: float
    """Best minus worst order, on accuracies averaged over repetitions."""
    noise_sd: float
    """Seed noise of one run: the pooled standard deviation of an order's accuracy over
    repetitions; nan with one repetition."""
    noise_gap: float
    """The best-worst gap expected from noise alone among this many orders' means."""
    order_sd: float
    """Standard deviation of the orders' true means: the variance of the observed means
    less what noise alone puts there (two-way residual variance over repetitions),
    floored at 0."""
    ratio: float
    """Order/noise ratio, ``order_sd / noise_sd``: about 0 where order does not matter,
    at least 1 where order moves accuracy by as much as a change of seed does."""


def order_effect(test: np.ndarray[Any, Any]) -> OrderEffect:
    """The :class:`OrderEffect` of a ``[order, repetition]`` accuracy table.

    Repetitions share their seed across orders, so each repetition's shift of every order
    alike is taken out before the noise in the orders' means is estimated (the residual
    of a two-way layout); it stays in ``noise_sd``, the noise of a single run.
    """
    means = test.mean(axis=1)
    n_orders, reps = test.shape
    gap = float(means.max() - means.min())
    if reps < 2 or n_orders < 2:
        nan = math.nan
        return OrderEffect(gap=gap, noise_sd=nan, noise_gap=nan, order_sd=nan, ratio=nan)
    resid = test - means[:, None] - test.mean(axis=0)[None, :] + test.mean()
    mean_noise_var = float((resid**2).sum()) / ((n_orders - 1) * (reps - 1)) / reps
    noise_sd = math.sqrt(float(test.var(axis=1, ddof=1).mean()))
    order_sd = math.sqrt(max(0.0, float(means.var(ddof=1)) - mean_noise_var))
    ratio = order_sd / noise_sd if noise_sd > 0 else math.inf if order_sd > 0 else math.nan
    return OrderEffect(
        gap=gap,
        noise_sd=noise_sd,
        noise_gap=math.sqrt(mean_noise_var) * expected_range(n_orders),
        order_sd=order_sd,
        ratio=ratio,
    )


def leave_one_out_oracle(test: np.ndarray[Any, Any]) -> tuple[float, float]:
    """What picking orders by the test accuracy of the other repetitions reaches.

    For each repetition ``r`` of a ``[order, repetition]`` table the order with the best
    mean over the other repetitions is picked and scored by its accuracy in ``r``, as a
    strategy's pick is scored. Returns the percentile (:func:`percentile_of`) of the
    picks' mean accuracy among the orders' means, and how often the pick is the best
    order. It is the reproducibility of the oracle's own ranking: what a strategy whose
    probes measured every order's test accuracy on the other repetitions would reach. A
    strategy that sees validation accuracy on fewer runs is not expected to reach it;
    one with more runs of every order can pass it. nan with fewer than 2 repetitions.
    """
    reps = test.shape[1]
    if reps < 2:
        return math.nan, math.nan
    means = test.mean(axis=1)
    others = (test.sum(axis=1, keepdims=True) - test) / (reps - 1)
    picks = others.argmax(axis=0)
    score = float(test[picks, np.arange(reps)].mean())
    return percentile_of(score, means), float(np.mean(picks == int(means.argmax())))


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_critical_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom (3 decimals).

    Tabulated up to 10; beyond, the Cornish-Fisher expansion around the normal quantile.
    """
    if dof < 1:
        raise ValueError("dof must be at least 1")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Two-sided 95% Student-t confidence interval of the mean; nan bounds below 2 values."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return math.nan, math.nan
    mean = float(arr.mean())
    half = t_critical_975(len(arr) - 1) * float(arr.std(ddof=1)) / math.sqrt(len(arr))
    return mean - half, mean + half
