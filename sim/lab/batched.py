"""Many schedules trained at once: the site trainer's SGD on stacked MLPs, by hand.

Runs whose schedules share a prefix share the model it trains: they are one *slot*
until their schedules part, so a tree of prefixes is trained, not every run from
scratch. At each hop the slots that visit the same site train together, their weights
stacked on a leading dimension and updated with batched matrix products (forward and
backward written out for the MLP: no autograd, no per-run Python).

What it shares with the site's training loop (:mod:`baton.ml.step`,
:mod:`baton.ml.trainer`), so the two cannot drift apart: the step count
(``total_steps``), the learning rate of each hop (``hop_lr``), the hop seeds, the
minibatches (``step_batches`` over the same ``randperm`` draws), the loss's logit offset
(``log_prior``). What it cannot share is ``train_step``, which runs one model through
autograd and ``torch.optim``: the lab's speed comes from running hundreds of models as
one stacked tensor per layer, with the gradients of the same loss (cross-entropy of
``logits + offset``, plus the proximal pull) written out by hand, and with SGD's update
written out too (:func:`sgd_update`, held by a test to ``make_optimizer``'s SGD bit for
bit), because the optimizer's per-step overhead would dominate its many small steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from baton.ml.data import Split
from baton.ml.families.mlp import MLP
from baton.ml.models import plan_model
from baton.ml.norm import input_statistics
from baton.ml.step import log_prior, step_batches
from baton.ml.trainer import hop_lr, hop_seed, total_steps
from sim.lab.metric import unscored_metric

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.tasks import Federation

HOP_METRICS = ("accuracy", "loss")
"""What :attr:`OrderAccuracies.before` and ``after`` hold on their last axis."""

Schedule = Sequence[Sequence[str]]
"""One order of site ids per cycle."""


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class OrderAccuracies:
    """Final accuracies of a set of runs, and what their hops measured."""

    test: np.ndarray[Any, np.dtype[np.float64]]
    """Accuracy on the federation's held-out test set, one per run."""
    val: np.ndarray[Any, np.dtype[np.float64]]
    """Accuracy on all sites' validation splits pooled (what the sites can measure)."""
    val_loss: np.ndarray[Any, np.dtype[np.float64]]
    """Mean cross-entropy on the pooled validation splits."""
    before: np.ndarray[Any, np.dtype[np.float64]]
    """``[run, hop, metric]``: the incoming model on the hop's site's validation split,
    metrics as :data:`HOP_METRICS` (``baton.ml.trainer.evaluate``'s)."""
    after: np.ndarray[Any, np.dtype[np.float64]]
    """``[run, hop, metric]``: the outgoing model, likewise."""


def supports_batched(plan: RunPlan) -> bool:
    """Whether :func:`train_schedules_batched` reproduces ``train_local`` for this plan.

    It does for SGD (any momentum and weight decay) on the MLP without dropout, for a
    plan ranked by accuracy (``sim.lab.metric``).
    """
    return not unsupported_by_batched(plan)


def unsupported_by_batched(plan: RunPlan) -> list[str]:
    """What in ``plan`` :func:`train_schedules_batched` cannot train, one phrase each
    (``model 'cnn' (only 'mlp')``); empty where it can (:func:`supports_batched`)."""
    found = []
    if plan.model.name != "mlp":
        found.append(f"model {plan.model.name!r} (only 'mlp')")
    if plan.training.optimizer != "sgd":
        found.append(f"optimizer {plan.training.optimizer!r} (only 'sgd')")
    dropout = plan.model.args.get("dropout", 0.0)
    if isinstance(dropout, int | float) and dropout > 0:
        found.append(f"dropout {dropout:g} (only 0)")
    metric = unscored_metric(plan)
    if metric is not None:
        found.append(metric)
    return found


def pooled_val(federation: Federation) -> Split:
    """Every site's validation split, concatenated in site order."""
    parts = list(federation.sites.values())
    return Split(
        x=np.concatenate([p.val.x for p in parts]), y=np.concatenate([p.val.y for p in parts])
    )


def train_orders_batched(
    plan: RunPlan, federation: Federation, orders: Sequence[Sequence[str]]
) -> OrderAccuracies:
    """One run per order, each repeating its order for ``plan.run.cycles`` cycles
    (:func:`train_schedules_batched`)."""
    return train_schedules_batched(plan, federation, [[o] * plan.run.cycles for o in orders])


def train_schedules_batched(
    plan: RunPlan, federation: Federation, schedules: Sequence[Schedule]
) -> OrderAccuracies:
    """Trains one run per schedule, as :func:`sim.simulate.simulate_sequential` would.

    Every run starts from the plan's initial model (``plan.run.seed``) and hop ``h``
    trains with seed ``hop_seed(plan.run.seed, h)``; the runs whose hop ``h`` visits the
    same site take the same minibatches. SGD with momentum and weight decay is the update
    ``torch.optim.SGD`` makes; logit adjustment and the first hop's fit of the input
    normalization are as in ``train_local``, and so are the forgetting remedies
    (proportional steps, the learning rate of ``hop_lr``, the proximal penalty toward
    each hop's incoming weights). Results agree with the one-by-one simulation to float
    rounding (batched matrix products round differently).

    Raises:
        ValueError: The plan is not supported (see :func:`supports_batched`), or the
            schedules are empty, ragged or name unknown sites.
    """
    if not supports_batched(plan):
        raise ValueError(
            "batched training supports SGD on the MLP without dropout, ranked by accuracy, only"
        )
    flat = [tuple(site for order in schedule for site in order) for schedule in schedules]
    shapes = {tuple(len(o) for o in s) for s in schedules}
    if not flat or len(shapes) != 1 or not flat[0] or len(set(next(iter(shapes)))) != 1:
        raise ValueError("schedules must be non-empty, of equal cycles and equal length")
    for schedule in schedules:
        for order in schedule:
            if any(s not in federation.sites for s in order):
                raise ValueError(f"order {list(order)} names an unknown site")
    model = plan_model(plan, federation.schema)
    stack = _Stack.of(model)
    k_sites = len(schedules[0][0])
    n_hops = len(flat[0])
    before = np.zeros((len(flat), n_hops, len(HOP_METRICS)))
    after = np.zeros_like(before)
    slot_of = [0] * len(flat)
    for hop in range(n_hops):
        # Runs in one slot that visit the same site stay together; others split off.
        keys: dict[tuple[int, str], int] = {}
        slot_of = [keys.setdefault((slot_of[i], run[hop]), len(keys)) for i, run in enumerate(flat)]
        stack = stack.take([parent for parent, _ in keys])
        slot_before = np.zeros((len(keys), len(HOP_METRICS)))
        slot_after = np.zeros_like(slot_before)
        by_site: dict[str, list[int]] = {}
        for slot, (_, site) in enumerate(keys):
            by_site.setdefault(site, []).append(slot)
        for site, members in by_site.items():
            data = federation.sites[site]
            group = stack.take(members)
            slot_before[members] = group.metrics(data.val)
            if hop == 0:
                group.fit_norm(data.train.x)
            group.train(
                data.train,
                plan,
                seed=hop_seed(plan.run.seed, hop),
                lr=hop_lr(plan.training, hop, k_sites),
            )
            slot_after[members] = group.metrics(data.val)
            stack.put(members, group)
        before[:, hop] = slot_before[slot_of]
        after[:, hop] = slot_after[slot_of]
    runs = stack.take(slot_of)
    val = runs.metrics(pooled_val(federation))
    return OrderAccuracies(
        test=runs.metrics(federation.test)[:, 0],
        val=val[:, 0],
        val_loss=val[:, 1],
        before=before,
        after=after,
    )


def sgd_update(
    tensors: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """The step ``torch.optim.SGD`` (from ``baton.ml.step.make_optimizer``) takes, over all
    tensors at once: weight decay, then momentum (``buffers`` starts empty and is filled on
    the first step), then the update. ``grads`` may be changed.

    Written out because the optimizer's per-step overhead would dominate the lab's many
    small steps (about 1.5x the lab's run time); a test holds it to the optimizer's
    result bit for bit.
    """
    if weight_decay:
        torch._foreach_add_(grads, tensors, alpha=weight_decay)
    if momentum != 0:
        if buffers:
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
        else:
            buffers.extend(g.clone() for g in grads)
        grads = buffers
    torch._foreach_add_(tensors, grads, alpha=-lr)


@dataclass(kw_only=True, slots=True, eq=False)
class _Stack:
    """Stacked MLPs: per layer ``[S, out, in]`` weights and ``[S, out]`` biases, and
    ``[S, F]`` input normalization."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module) -> _Stack:
        if not isinstance(model, MLP):
            raise ValueError("batched training needs the MLP")
        linears = [m for m in model.body if isinstance(m, nn.Linear)]
        kinds = [type(m) for m in model.body]
        if kinds != [nn.Linear, nn.ReLU] * (len(linears) - 1) + [nn.Linear]:
            raise ValueError("batched training needs Linear -> ReLU blocks and a linear head")
        return cls(
            weights=[m.weight.detach().unsqueeze(0).clone() for m in linears],
            biases=[m.bias.detach().unsqueeze(0).clone() for m in linears],
            mean=model.input_norm.mean.detach().unsqueeze(0).clone(),
            std=model.input_norm.std.detach().unsqueeze(0).clone(),
        )

    def take(self, slots: Sequence[int]) -> _Stack:
        idx = torch.tensor(list(slots), dtype=torch.long)
        return _Stack(
            weights=[w[idx] for w in self.weights],
            biases=[b[idx] for b in self.biases],
            mean=self.mean[idx],
            std=self.std[idx],
        )

    def put(self, slots: Sequence[int], other: _Stack) -> None:
        idx = torch.tensor(list(slots), dtype=torch.long)
        for mine, theirs in zip(
            self.weights + self.biases, other.weights + other.biases, strict=True
        ):
            mine[idx] = theirs
        self.mean[idx] = other.mean
        self.std[idx] = other.std

    def fit_norm(self, x_np: np.ndarray[Any, Any]) -> None:
        mean, std = input_statistics(torch.from_numpy(x_np))
        self.mean = mean.expand_as(self.mean).clone()
        self.std = std.expand_as(self.std).clone()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[S, B, C]`` for inputs ``[B, F]``, and each layer's input."""
        h = (x.unsqueeze(0) - self.mean.unsqueeze(1)) / self.std.unsqueeze(1)
        inputs = [h]
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if j == last:
                return z, inputs
            h = torch.relu(z)
            inputs.append(h)
        raise AssertionError("unreachable: the MLP has a head")

    def metrics(self, split: Split) -> np.ndarray[Any, np.dtype[np.float64]]:
        """``[S, 2]``: accuracy and mean cross-entropy of every slot on ``split``."""
        x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
        with torch.no_grad():
            logits, _ = self.forward(x)
        # Cross-entropy by hand: F.cross_entropy over [S * rows, C] is several times slower.
        top = logits.amax(dim=2, keepdim=True)
        log_norm = (logits - top).exp_().sum(dim=2).log_() + top.squeeze(2)
        picked = logits.gather(2, y.view(1, -1, 1).expand(len(logits), -1, 1)).squeeze(2)
        mean_loss = (log_norm - picked).double().mean(dim=1)
        correct = (logits.argmax(dim=2) == y.unsqueeze(0)).double().mean(dim=1)
        return np.stack([correct.numpy(), mean_loss.numpy()], axis=1).astype(np.float64)

    def train(self, split: Split, plan: RunPlan, *, seed: int, lr: float) -> None:
        """``train_local``'s SGD for every slot on ``split``, the same minibatches for all."""
        training = plan.training
        x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
        n = len(y)
        num_classes = self.weights[-1].shape[1]
        offset = (
            log_prior(y, num_classes) if training.logit_adjustment else torch.zeros(num_classes)
        )
        eye = torch.eye(num_classes)
        tensors = self.weights + self.biases
        momentum: list[torch.Tensor] = []
        mu = training.proximal_mu
        anchor = [t.clone() for t in tensors] if mu > 0 else []
        generator = torch.Generator().manual_seed(seed)
        batches = step_batches(
            total=total_steps(n, training),
            per_epoch=math.ceil(n / training.batch_size),
            batch=training.batch_size,
            order=lambda _epoch: torch.randperm(n, generator=generator),
        )
        for batch in batches:
            grads = self._gradients(x[batch], eye[y[batch]], offset)
            if mu > 0:  # the gradient of baton.ml.step.proximal_penalty
                torch._foreach_add_(grads, torch._foreach_sub(tensors, anchor), alpha=mu)
            sgd_update(
                tensors,
                grads,
                momentum,
                lr=lr,
                momentum=training.momentum,
                weight_decay=training.weight_decay,
            )
        if not all(math.isfinite(float(t.sum())) for t in tensors):
            raise ValueError("local training diverged: non-finite weights")

    def _gradients(
        self, x: torch.Tensor, onehot: torch.Tensor, offset: torch.Tensor
    ) -> list[torch.Tensor]:
        """Gradients of every slot's mean cross-entropy of ``logits + offset``, weights
        first and then biases, as :attr:`weights` + :attr:`biases`."""
        logits, inputs = self.forward(x)
        # Softmax by hand: torch.softmax over a small last axis is several times slower.
        z = logits + offset
        e = (z - z.amax(dim=2, keepdim=True)).exp_()
        g = (e / e.sum(dim=2, keepdim=True) - onehot) / x.shape[0]
        dw: list[torch.Tensor] = []
        db: list[torch.Tensor] = []
        for j in range(len(self.weights) - 1, -1, -1):
            dw.append(torch.bmm(g.transpose(1, 2), inputs[j]))
            db.append(g.sum(dim=1))
            if j > 0:
                g = torch.bmm(g, self.weights[j]) * (inputs[j] > 0)
        return dw[::-1] + db[::-1]
