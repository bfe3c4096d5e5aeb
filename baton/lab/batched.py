"""Many orders trained at once: the site trainer's SGD, vectorized over stacked models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from baton.data import Split
from baton.models import plan_model
from site_node.trainer import hop_lr, hop_seed, proximal_penalty, total_steps

if TYPE_CHECKING:
    from baton.data import Federation
    from baton.plan import RunPlan

_MIN_STD = 1e-6  # as baton.models.fit_input_norm


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class OrderAccuracies:
    """Final accuracies of a set of runs, one per order."""

    test: np.ndarray[Any, np.dtype[np.float64]]
    """Accuracy on the federation's held-out test set, one per order."""
    val: np.ndarray[Any, np.dtype[np.float64]]
    """Accuracy on all sites' validation splits pooled (what the sites can measure)."""


def supports_batched(plan: RunPlan) -> bool:
    """Whether :func:`train_orders_batched` reproduces ``train_local`` for this plan.

    It does for SGD (any momentum and weight decay) on models without dropout.
    """
    if plan.training.optimizer != "sgd":
        return False
    dropout = plan.model.args.get("dropout", 0.0)
    return not (isinstance(dropout, int | float) and dropout > 0)


def pooled_val(federation: Federation) -> Split:
    """Every site's validation split, concatenated in site order."""
    parts = list(federation.sites.values())
    return Split(
        x=np.concatenate([p.val.x for p in parts]), y=np.concatenate([p.val.y for p in parts])
    )


def train_orders_batched(
    plan: RunPlan, federation: Federation, orders: Sequence[Sequence[str]]
) -> OrderAccuracies:
    """Trains one run per order, each repeating its order for ``plan.run.cycles`` cycles.

    Every run starts from the plan's initial model (``plan.run.seed``) and hop ``h``
    trains with seed ``hop_seed(plan.run.seed, h)``, exactly as
    :func:`baton.simulate.simulate_sequential`; the runs whose hop ``h`` visits the same
    site take the same minibatches and are trained together, their parameters stacked
    and the model applied with ``torch.func.vmap``. SGD with momentum and weight decay is
    the update ``torch.optim.SGD`` makes; logit adjustment and the first hop's fit of the
    input normalization are as in ``train_local``, and so are the forgetting remedies
    (proportional steps, the cyclical learning rate, the proximal penalty toward each
    hop's incoming weights). Results agree with the one-by-one
    simulation to float rounding (vectorized matrix products round differently).

    Raises:
        ValueError: The plan is not supported (see :func:`supports_batched`), or the
            orders are empty, ragged or name unknown sites.
    """
    if not supports_batched(plan):
        raise ValueError("batched training supports SGD without dropout only")
    if not orders or len({len(o) for o in orders}) != 1 or not orders[0]:
        raise ValueError("orders must be non-empty and of equal length")
    for order in orders:
        if any(s not in federation.sites for s in order):
            raise ValueError(f"order {list(order)} names an unknown site")
    model = plan_model(plan, federation.schema)
    model.train()
    n = len(orders)
    params = {
        k: v.detach().unsqueeze(0).repeat(n, *[1] * v.ndim) for k, v in model.named_parameters()
    }
    buffers = {
        k: v.detach().unsqueeze(0).repeat(n, *[1] * v.ndim) for k, v in model.named_buffers()
    }
    k_sites = len(orders[0])
    for hop in range(plan.run.cycles * k_sites):
        position = hop % k_sites
        groups: dict[str, list[int]] = {}
        for i, order in enumerate(orders):
            groups.setdefault(order[position], []).append(i)
        for site, members in groups.items():
            idx = torch.tensor(members)
            sub_p = {k: v[idx] for k, v in params.items()}
            sub_b = {k: v[idx] for k, v in buffers.items()}
            if hop == 0:
                _fit_norm(sub_b, federation.sites[site].train.x)
            _train_group(
                model,
                sub_p,
                sub_b,
                federation.sites[site].train,
                plan,
                seed=hop_seed(plan.run.seed, hop),
                lr=hop_lr(plan.training, hop, k_sites),
            )
            for k in params:
                params[k][idx] = sub_p[k]
            for k in buffers:
                buffers[k][idx] = sub_b[k]
    return OrderAccuracies(
        test=_accuracy(model, params, buffers, federation.test),
        val=_accuracy(model, params, buffers, pooled_val(federation)),
    )


def _fit_norm(buffers: dict[str, torch.Tensor], x_np: np.ndarray[Any, Any]) -> None:
    x = torch.from_numpy(x_np)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) if len(x) > 1 else torch.ones_like(mean)
    std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
    buffers["input_norm.mean"] = mean.expand_as(buffers["input_norm.mean"]).clone()
    buffers["input_norm.std"] = std.expand_as(buffers["input_norm.std"]).clone()
    buffers["input_norm.fitted"] = torch.ones_like(buffers["input_norm.fitted"])


def _forward(model: nn.Module) -> Any:
    def one(
        p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = functional_call(model, (p, b), (x,))
        return out

    return vmap(one, in_dims=(0, 0, None))


def _train_group(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    split: Split,
    plan: RunPlan,
    *,
    seed: int,
    lr: float,
) -> None:
    training = plan.training
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    n = len(y)
    num_classes = next(reversed(params.values())).shape[-1]
    if training.logit_adjustment:
        counts = torch.bincount(y, minlength=num_classes).double()
        offset = torch.log((counts + 1) / (n + num_classes)).float()
    else:
        offset = torch.zeros(num_classes)
    forward = _forward(model)
    names = list(params)
    tensors = [params[k].clone().requires_grad_(True) for k in names]
    momentum: list[torch.Tensor | None] = [None] * len(names)
    mu = training.proximal_mu
    anchor = [t.detach().clone() for t in tensors] if mu > 0 else []
    total = total_steps(n, training)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while step < total:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, training.batch_size):
            batch = perm[start : start + training.batch_size]
            logits = forward(dict(zip(names, tensors, strict=True)), buffers, x[batch])
            groups, rows, classes = logits.shape
            losses = F.cross_entropy(
                (logits + offset).reshape(-1, classes), y[batch].repeat(groups), reduction="none"
            )
            loss = losses.reshape(groups, rows).mean(dim=1).sum()
            if mu > 0:
                # Summed over the stacked runs, each run's gradient is its own pull.
                loss = loss + proximal_penalty(tensors, anchor, mu)
            grads = torch.autograd.grad(loss, tensors)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(tensors, grads, strict=True)):
                    d_p = g.add(p, alpha=training.weight_decay) if training.weight_decay else g
                    if training.momentum != 0:
                        buf = momentum[i]
                        if buf is None:
                            buf = torch.clone(d_p).detach()
                            momentum[i] = buf
                        else:
                            buf.mul_(training.momentum).add_(d_p)
                        d_p = buf
                    p.add_(d_p, alpha=-lr)
            step += 1
            if step == total:
                break
    for k, t in zip(names, tensors, strict=True):
        params[k] = t.detach()
    if not all(math.isfinite(float(params[k].sum())) for k in names):
        raise ValueError("local training diverged: non-finite weights")


def _accuracy(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    split: Split,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    with torch.no_grad():
        logits = _forward(model)(params, buffers, x)
    correct = (logits.argmax(dim=2) == y[None, :]).double().mean(dim=1)
    return np.asarray(correct.numpy(), dtype=np.float64)
