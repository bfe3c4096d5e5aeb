"""One record per strategy of a cell: percentiles, regret, paired tests, cost against gain."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sim.lab.oracle import ci95, leave_one_out_oracle, order_effect, percentile_of
from sim.lab.stats import paired_t_test, wilcoxon_signed_rank

if TYPE_CHECKING:
    from sim.lab.grid import Trial

__all__ = ["CellLabels", "summarize"]


class CellLabels(Protocol):
    """What a record says of its cell: a grid's ``sim.lab.cells.Cell`` or a plan's."""

    @property
    def dataset(self) -> str:
        """The task."""

    @property
    def partition_label(self) -> str:
        """How the data is split across the sites."""

    @property
    def k(self) -> int:
        """Number of sites."""

    @property
    def local_epochs(self) -> int:
        """Local epochs per hop."""

    @property
    def cycles(self) -> int:
        """Cycles per run."""


def summarize(
    cell: CellLabels, trials: Sequence[Trial], *, remedies: str = "none"
) -> list[dict[str, Any]]:
    """One record per strategy (and FedAvg) of a cell, means over the trials.

    Besides the order statistics (percentile among all orders, regret, best-order rate,
    share of centralized accuracy, the cell's order/noise ratio) every record carries:

    - ``gain_vs_random_pts``: accuracy points over a uniformly random order, whose
      expected accuracy in a trial is the mean over all candidate orders;
    - ``p_vs_random``: two-sided paired t-test across the partition seeds of the
      strategy's accuracy against that expectation (``p_vs_random_wilcoxon``: the exact
      signed-rank test of the same pairs; with few seeds it cannot go below ``2 / 2**n``);
    - ``vs_fedavg_pts`` and ``p_vs_fedavg``: the same against FedAvg at equal compute;
    - ``loo_oracle_percentile`` and ``loo_oracle_best_order_rate``: what picking the
      order with the best test accuracy in the other repetitions reaches
      (:func:`sim.lab.oracle.leave_one_out_oracle`): how reproducibly the cell's best
      order can be found from that many runs of every order;
    - the cost next to the gain: ``extra_runs`` (probe runs per run),
      ``extra_train_seconds`` (what those runs take, at the measured wall time of one
      simulated run) and ``decide_seconds`` (the strategy's own planning time per run).

    Values are in the trials' primary metric (``metric``, ``higher_is_better`` in each
    record; the ``accuracy``-named keys hold it, named for the lab's classification
    cells). Its direction ranks: percentiles, regret, best orders, the oracle, and the
    signs of the gains (positive: better) all read a lower-is-better metric the right
    way round, and ``pct_of_centralized`` is then centralized over the strategy's value
    (100: as good as pooled training, less: worse).
    """
    metric = trials[0].metric
    sign = 1.0 if trials[0].higher_is_better else -1.0
    effects = [order_effect(sign * t.scores.test) for t in trials]
    oracles = np.array([leave_one_out_oracle(sign * t.scores.test) for t in trials])
    ratio = _mean([e.ratio for e in effects])
    random_order = [float(t.scores.test.mean()) for t in trials]
    fedavg = [float(np.mean(t.chosen["fedavg"])) for t in trials]
    run_seconds = _mean([t.run_seconds for t in trials])
    records = []
    for label in trials[0].chosen:
        accs, pcts, regrets, pct_central, hit_rates = [], [], [], [], []
        for t in trials:
            means = sign * t.scores.test.mean(axis=1)
            acc = float(np.mean(t.chosen[label]))
            accs.append(acc)
            pcts.append(percentile_of(sign * acc, means))
            regrets.append(float(means.max()) - sign * acc)
            pct_central.append(_share_of_centralized(acc, t.centralized, sign))
            hit_rates.append(float(np.mean(t.best_hits[label])))
        # Percentiles live in [0, 100]; a bound beyond is clipped (nan stays nan).
        pct_lo, pct_hi = (v if math.isnan(v) else min(100.0, max(0.0, v)) for v in ci95(pcts))
        extra_runs = trials[0].extra_runs[label]
        records.append(
            {
                "dataset": cell.dataset,
                "partition": cell.partition_label,
                "k": cell.k,
                "local_epochs": cell.local_epochs,
                "cycles": cell.cycles,
                "remedies": remedies,
                "metric": metric,
                "higher_is_better": sign > 0,
                "strategy": label,
                "trials": len(trials),
                "orders": len(trials[0].scores.orders),
                "repetitions": len(trials[0].scores.seeds),
                "accuracy_mean": float(np.mean(accs)),
                "percentile_mean": float(np.mean(pcts)),
                "ci95": [pct_lo, pct_hi],
                "regret_mean": float(np.mean(regrets)),
                "best_order_rate": float(np.mean(hit_rates)),
                "pct_of_centralized": float(np.mean(pct_central)),
                "centralized_accuracy": float(np.mean([t.centralized for t in trials])),
                "random_order_accuracy": float(np.mean(random_order)),
                "gain_vs_random_pts": 100.0 * sign * float(np.mean(accs) - np.mean(random_order)),
                "p_vs_random": paired_t_test(accs, random_order).p_value,
                "p_vs_random_wilcoxon": wilcoxon_signed_rank(accs, random_order).p_value,
                "vs_fedavg_pts": 100.0 * sign * float(np.mean(accs) - np.mean(fedavg)),
                "p_vs_fedavg": paired_t_test(accs, fedavg).p_value,
                "order_noise_ratio": ratio,
                "gap_best_worst": _mean([e.gap for e in effects]),
                "noise_gap": _mean([e.noise_gap for e in effects]),
                "loo_oracle_percentile": _mean(oracles[:, 0].tolist()),
                "loo_oracle_best_order_rate": _mean(oracles[:, 1].tolist()),
                "order_sensitive": bool(ratio >= 1.0) if math.isfinite(ratio) else False,
                "extra_runs": extra_runs,
                "extra_train_seconds": extra_runs * run_seconds,
                "decide_seconds": _mean([t.decide_seconds.get(label, math.nan) for t in trials]),
            }
        )
    return records


def _share_of_centralized(value: float, centralized: float, sign: float) -> float:
    """Percent of centralized training's quality: ``value / centralized`` where higher is
    better, ``centralized / value`` where lower is; nan where the divisor is not positive."""
    top, bottom = (value, centralized) if sign > 0 else (centralized, value)
    return 100.0 * top / bottom if bottom > 0 else math.nan


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
