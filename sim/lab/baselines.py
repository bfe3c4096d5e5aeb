"""Baselines at equal compute: FedAvg through Flower's aggregation, and pooled training."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from baton.ml.trainer import hop_seed
from sim.lab.metric import require_scored_metric
from sim.simulate import train_centralized

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.tasks import Federation

__all__ = ["centralized_accuracy", "fedavg_accuracy", "fedavg_metrics"]

_WEIGHT_KEY = "num-examples"


def fedavg_accuracy(plan: RunPlan, federation: Federation) -> float:
    """Test accuracy of FedAvg (:func:`fedavg_metrics`).

    Raises:
        ConfigError: The plan's primary metric is not accuracy.
    """
    require_scored_metric(plan, "the FedAvg baseline")
    return fedavg_metrics(plan, federation)["accuracy"]


def fedavg_metrics(plan: RunPlan, federation: Federation) -> dict[str, float]:
    """Test metrics of FedAvg with the sites' own trainer, at equal local compute.

    One round per cycle: every site trains a copy of the global model with the task's
    hooks (:mod:`baton.ml.hooks`; by default :func:`baton.ml.trainer.train_local`) for the
    plan's local epochs or steps (seed ``hop_seed(plan.run.seed, round * K + i)`` for the
    ``i``-th site), and the replies (the state that travels: the whole model, or a
    language model's adapters) are averaged, weighted by training examples, by Flower's
    FedAvg aggregation (``aggregate_arrayrecords`` over ``ArrayRecord`` replies, as
    ``flwr.serverapp.strategy.FedAvg`` does). Plain FedAvg whatever remedies the plan turns
    on: every site trains at the constant ``lr`` without proximal penalty, for the steps a
    hop would take (so ``proportional_steps`` keeps the local compute equal). Each site
    fits the input normalization on its own data in round one; the average of those
    moments travels on. Same initial weights as the sequential run.
    """
    hooks = federation.hooks
    training = dataclasses.replace(plan.training, lr_schedule="constant", proximal_mu=0.0)
    model = federation.build_model(plan)
    sites = list(federation.sites.items())
    for rnd in range(plan.run.cycles):
        replies = []
        for i, (_, data) in enumerate(sites):
            local = federation.build_model(plan)
            hooks.load_travelling(local, hooks.travelling_state(model))
            hooks.train(
                local, data.train, training, seed=hop_seed(plan.run.seed, rnd * len(sites) + i)
            )
            replies.append(
                RecordDict(
                    {
                        "arrays": ArrayRecord(hooks.travelling_state(local)),
                        "metrics": MetricRecord({_WEIGHT_KEY: len(data.train)}),
                    }
                )
            )
        averaged = aggregate_arrayrecords(replies, _WEIGHT_KEY).to_torch_state_dict()
        # The average of integer buffers comes back as floats: cast back, as loading did.
        dtypes = {name: t.dtype for name, t in hooks.travelling_state(model).items()}
        hooks.load_travelling(model, {k: v.to(dtypes[k]) for k, v in averaged.items()})
    return hooks.evaluate(model, federation.test)


def centralized_accuracy(plan: RunPlan, federation: Federation) -> float:
    """Test accuracy of the same model trained on the pooled data (``train_centralized``).

    Raises:
        ConfigError: The plan's primary metric is not accuracy.
    """
    require_scored_metric(plan, "the centralized baseline")
    return train_centralized(plan, federation)["accuracy"]
