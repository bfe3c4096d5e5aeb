"""Paired tests of one strategy against another across partition seeds (no scipy needed)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_WILCOXON_MAX = 20
"""Up to this many non-zero differences the signed-rank p-value is exact (2**n sign flips)."""

_EPS = 1e-12


@dataclass(frozen=True, kw_only=True, slots=True)
class PairedTest:
    """Outcome of a two-sided paired test of ``a`` against ``b``."""

    n: int
    """Pairs used (the signed-rank test drops zero differences)."""
    mean_diff: float
    """Mean of ``a - b`` over all pairs."""
    statistic: float
    """Student's t, or the signed-rank statistic ``W+`` (sum of the positive ranks)."""
    p_value: float
    """Two-sided p-value; 1.0 when the differences give no evidence either way, nan when
    there are too few pairs to test."""


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], not {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: int) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("dof must be at least 1")
    if math.isinf(t):
        return 0.0
    return betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired Student t-test of ``mean(a - b) == 0``.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    diff = _differences(a, b)
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    if n < 2:
        return PairedTest(n=n, mean_diff=mean, statistic=math.nan, p_value=math.nan)
    sd = float(diff.std(ddof=1))
    if sd <= _EPS:
        same = abs(mean) <= _EPS
        t = 0.0 if same else math.copysign(math.inf, mean)
        return PairedTest(n=n, mean_diff=mean, statistic=t, p_value=1.0 if same else 0.0)
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n=n, mean_diff=mean, statistic=t, p_value=t_two_sided_p(t, n - 1))


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` symmetric around 0.

    Zero differences are dropped (Wilcoxon's convention); tied absolute differences get
    their average rank. Up to :data:`EXACT_WILCOXON_MAX` pairs the p-value is exact: the
    share of the ``2**n`` sign assignments, with these ranks, whose ``W+`` is at least as
    far from its mean ``n(n+1)/4`` as the observed one. Beyond, the normal approximation
    with a tie-corrected variance.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    diff = _differences(a, b)
    mean_diff = float(diff.mean()) if len(diff) else math.nan
    nonzero = diff[np.abs(diff) > _EPS]
    n = len(nonzero)
    if n == 0:
        return PairedTest(n=0, mean_diff=mean_diff, statistic=0.0, p_value=1.0)
    ranks = _average_ranks(np.abs(nonzero))
    w_plus = float(ranks[nonzero > 0].sum())
    centre = float(ranks.sum()) / 2.0
    observed = abs(w_plus - centre)
    if n <= EXACT_WILCOXON_MAX:
        as_far = 0
        for signs in itertools.product((0.0, 1.0), repeat=n):
            if abs(float(np.dot(signs, ranks)) - centre) >= observed - 1e-9:
                as_far += 1
        p = as_far / 2**n
    else:
        var = float((ranks**2).sum()) / 4.0
        z = observed / math.sqrt(var)
        p = math.erfc(z / math.sqrt(2.0))
    return PairedTest(n=n, mean_diff=mean_diff, statistic=w_plus, p_value=min(1.0, p))


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)


def _average_ranks(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and abs(values[order[j + 1]] - values[order[i]]) <= _EPS:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks
