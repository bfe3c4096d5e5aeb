"""A Gaussian-process surrogate of run quality over orders of sites.

The covariance of two orders ``a`` and ``b`` is, up to a scale profiled out of the
likelihood,

    (1 - noise) * (linear * <phi(a), phi(b)> / F
                   + (1 - linear) * exp(-spread * D(a, b) / P) + CONSTANT)
    + noise * [same observation]

with ``phi`` the order features of :func:`ordering.learned.feature_matrix` (``F`` of
them), ``D`` the number of site pairs the two orders put the other way round (Kendall's
distance, at most ``P = k(k-1)/2``) and a broad constant for the mean. The linear part
generalizes across orders as the ridge surrogate does; the Mallows part (Kendall kernel)
lets orders near a well-measured one differ from the linear trend, so with many
observations the surrogate does not smooth away what was measured. ``noise``,
``linear`` and ``spread`` are picked by marginal likelihood from fixed grids at every
fit, never by a score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NOISE_GRID = (0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95)
"""Share of the observations' variance that is noise."""
LINEAR_GRID = (0.0, 0.5, 1.0)
"""Share of the signal covariance from the linear kernel on order features."""
SPREAD_GRID = (1.0, 3.0, 8.0)
"""Decay of the Kendall kernel over the share of pairs two orders disagree on."""
CONSTANT = 10.0
"""Prior variance of the mean, relative to the signal's: a nearly flat mean."""

Array = np.ndarray[Any, np.dtype[np.float64]]


def discordant_pairs(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> Array:
    """``[len(a), len(b)]``: site pairs each order of ``a`` and each of ``b`` put in opposite
    order (orders as rows of site indices ``0..k-1``)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    k = a.shape[1]
    i, j = np.triu_indices(k, 1)
    pos_a, pos_b = np.argsort(a, axis=1), np.argsort(b, axis=1)
    sign_a = np.sign(pos_a[:, i] - pos_a[:, j]).astype(np.float64)
    sign_b = np.sign(pos_b[:, i] - pos_b[:, j]).astype(np.float64)
    return np.asarray((len(i) - sign_a @ sign_b.T) / 2.0, dtype=np.float64)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class OrderGP:
    """The posterior of a GP fitted to observed orders (see the module docstring)."""

    observed: np.ndarray[Any, np.dtype[np.int64]]
    """``[n, k]`` observed orders, as site indices."""
    features: Array
    """``[n, F]`` their features."""
    weights: Array
    """``C^-1 z``: the standardized observations weighted by the inverse covariance."""
    offset: float
    """Mean of the observations."""
    unit: float
    """Standard deviation of the observations (1 if they are all equal)."""
    noise: float
    """Chosen noise share."""
    linear: float
    """Chosen linear share."""
    spread: float
    """Chosen Kendall decay."""

    @classmethod
    def fit(cls, orders: Sequence[Sequence[int]], features: Array, values: Array) -> OrderGP:
        """Fits to ``values`` (higher is better) of ``orders`` with ``features`` rows.

        Raises:
            ValueError: Fewer than 2 observations, or rows that do not line up.
        """
        observed = np.asarray(orders, dtype=np.int64)
        y = np.asarray(values, dtype=np.float64)
        n = len(y)
        if n < 2 or observed.shape[0] != n or features.shape[0] != n:
            raise ValueError(f"need at least 2 aligned observations, got {n}")
        offset = float(y.mean())
        unit = float(y.std()) or 1.0
        z = (y - offset) / unit
        lin = _linear(features, features)
        disc = discordant_pairs(observed, observed) / _pairs(observed.shape[1])
        best: tuple[float, float, float, float, Array] | None = None
        for linear in LINEAR_GRID:
            for spread in SPREAD_GRID if linear < 1.0 else SPREAD_GRID[:1]:
                signal = linear * lin + (1.0 - linear) * np.exp(-spread * disc) + CONSTANT
                for noise in NOISE_GRID:
                    cov = (1.0 - noise) * signal + noise * np.eye(n)
                    try:
                        chol = np.linalg.cholesky(cov)
                    except np.linalg.LinAlgError:
                        continue
                    weights = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
                    scale = max(1e-12, float(z @ weights) / n)
                    loglik = -0.5 * n * math.log(scale) - float(np.log(np.diag(chol)).sum())
                    if best is None or loglik > best[0]:
                        best = (loglik, noise, linear, spread, weights)
        if best is None:
            raise ValueError("no covariance of the grid could be factored")
        _, noise, linear, spread, weights = best
        return cls(
            observed=observed,
            features=np.asarray(features, dtype=np.float64),
            weights=weights,
            offset=offset,
            unit=unit,
            noise=noise,
            linear=linear,
            spread=spread,
        )

    def predict(self, orders: Sequence[Sequence[int]], features: Array) -> Array:
        """Posterior mean quality, in the observations' units, of ``orders``."""
        rows = np.asarray(orders, dtype=np.int64)
        disc = discordant_pairs(rows, self.observed) / _pairs(rows.shape[1])
        signal = (
            self.linear * _linear(np.asarray(features, dtype=np.float64), self.features)
            + (1.0 - self.linear) * np.exp(-self.spread * disc)
            + CONSTANT
        )
        return np.asarray(
            self.offset + self.unit * (1.0 - self.noise) * (signal @ self.weights),
            dtype=np.float64,
        )


def _linear(x: Array, y: Array) -> Array:
    return np.asarray(x @ y.T / max(1, x.shape[1]), dtype=np.float64)


def _pairs(k: int) -> int:
    return max(1, k * (k - 1) // 2)
