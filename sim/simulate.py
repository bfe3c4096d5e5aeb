"""In-process sequential training over a simulated federation, with the sites' own trainer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baton.ml.trainer import TrainResult, hop_seed

if TYPE_CHECKING:
    import torch

    from baton.plan import RunPlan
    from sim.tasks import Federation

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class HopRecord:
    """One simulated hop."""

    hop: int
    """0-based hop index across the whole run."""
    cycle: int
    """0-based cycle the hop belongs to."""
    site: str
    """The site that trained."""
    metrics_before: dict[str, float]
    """The incoming model on the site's validation split."""
    metrics_after: dict[str, float]
    """The outgoing model on the site's validation split."""
    train: TrainResult
    """What local training did."""


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class SimulationResult:
    """Outcome of :func:`simulate_sequential`."""

    state: dict[str, torch.Tensor]
    """The final model's state dict (CPU copies)."""
    hops: tuple[HopRecord, ...]
    """Every hop, in order."""
    test_metrics: dict[str, float]
    """The final model on the federation's held-out test set."""


def simulate_sequential(
    plan: RunPlan,
    federation: Federation,
    orders: Sequence[Sequence[str]],
) -> SimulationResult:
    """Trains one model sequentially through the sites, as the real system does.

    The model is built from the plan (name, arguments, ``plan.run.seed``); hop ``h``
    (counted from 0 across cycles) evaluates the incoming model on the site's validation
    split, trains with the task's hooks (:mod:`baton.ml.hooks`; by default
    :func:`baton.ml.trainer.train_local`) (seed
    ``hop_seed(plan.run.seed, h)``, hop index ``h``, the cycle's length as the number of
    sites, as the site daemon does), and evaluates again. The plan's site list is not
    consulted: ``orders`` decides who trains.

    Args:
        plan: The run plan (model, seed and training policy are used).
        federation: The sites' data and the held-out test set.
        orders: One sequence of site ids per cycle, in visiting order.

    Raises:
        ValueError: ``orders`` is empty or names a site the federation lacks.
    """
    if not orders or not all(orders):
        raise ValueError("orders must hold at least one non-empty cycle")
    for order in orders:
        for site in order:
            if site not in federation.sites:
                raise ValueError(f"order names unknown site {site!r}")
    hooks = federation.hooks
    model = federation.build_model(plan)
    records: list[HopRecord] = []
    for cycle, order in enumerate(orders):
        for site in order:
            data = federation.sites[site]
            hop = len(records)
            before = hooks.evaluate(model, data.val)
            result = hooks.train(
                model,
                data.train,
                plan.training,
                seed=hop_seed(plan.run.seed, hop),
                hop_index=hop,
                num_sites=len(order),
            )
            after = hooks.evaluate(model, data.val)
            records.append(
                HopRecord(
                    hop=hop,
                    cycle=cycle,
                    site=site,
                    metrics_before=before,
                    metrics_after=after,
                    train=result,
                )
            )
    test = hooks.evaluate(model, federation.test)
    logger.debug("sequential simulation of %d hops done", len(records))
    return SimulationResult(
        state=hooks.travelling_state(model), hops=tuple(records), test_metrics=test
    )


def train_centralized(plan: RunPlan, federation: Federation) -> dict[str, float]:
    """Test metrics of the same model trained on all sites' training data pooled.

    Equal compute: the model sees every pooled example as often as the sequential run
    does. With ``local_steps == 0`` it trains ``cycles * local_epochs`` epochs over the
    pooled data; with ``local_steps > 0`` it takes ``cycles * num_sites * local_steps``
    steps. Same initial weights, optimizer and batch size; seed
    ``hop_seed(plan.run.seed, 0)``; the same loss as the sites (``training.logit_adjustment``).
    The forgetting remedies do not apply (pooled training has nothing to forget): it
    trains at the constant ``lr``, without proximal penalty or proportional steps, so the
    baseline is the same whichever remedies a plan turns on.
    """
    hooks = federation.hooks
    model = federation.build_model(plan)
    cycles = plan.run.cycles
    training = dataclasses.replace(
        plan.training, proportional_steps=False, lr_schedule="constant", proximal_mu=0.0
    )
    if training.local_steps > 0:
        training = dataclasses.replace(
            training, local_steps=cycles * len(federation.sites) * training.local_steps
        )
    else:
        training = dataclasses.replace(training, local_epochs=cycles * training.local_epochs)
    hooks.train(model, federation.pooled_train(), training, seed=hop_seed(plan.run.seed, 0))
    return hooks.evaluate(model, federation.test)
