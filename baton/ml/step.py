"""The training step every path shares: optimizer, loss, one step, and which batches to take.

The single-process trainer (:func:`baton.ml.trainer.train_local`), the site's parallel
torchrun workers (and their pipeline's loss) and the lab's batched trainer all build their
optimizer with :func:`make_optimizer`, define the loss with :func:`training_loss` and
:func:`log_prior`, and walk their minibatches with :func:`step_batches`; the trainer and
the workers take each step with :func:`train_step` (a pipeline with :func:`optimizer_step`
around its schedule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baton.errors import ModelError

OPTIMIZERS = ("sgd", "adam", "adamw")
"""What :func:`make_optimizer` builds: SGD (momentum, weight decay), Adam, AdamW."""

MAX_PROGRESS_CALLS = 20
"""A hop reports progress at most this many times (the last time at the final step)."""


def make_optimizer(
    params: Iterable[torch.Tensor],
    *,
    name: str,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """A fresh optimizer over ``params`` (one hop's: no state carries over between hops).

    The parameters form one group per device mesh, in their order: foreach and fused
    kernels refuse plain tensors mixed with DTensors, or DTensors on different meshes. Plain
    tensors make a single group, the same optimizer as one built over the list.

    Raises:
        ModelError: ``name`` is not one of :data:`OPTIMIZERS`.
    """
    groups: dict[str, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault(repr(getattr(p, "device_mesh", None)), []).append(p)
    param_groups: list[dict[str, Any]] = [{"params": g} for g in groups.values()]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    raise ModelError(f"unknown optimizer {name!r}")


def log_prior(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Log of the add-one smoothed local label distribution, ``log((n_c + 1) / (n + C))``:
    the logit offset of logit adjustment."""
    counts = torch.bincount(y, minlength=num_classes).double()
    return torch.log((counts + 1) / (len(y) + num_classes)).float()


def training_loss(
    logits: torch.Tensor, targets: torch.Tensor, offset: torch.Tensor | None
) -> torch.Tensor:
    """The loss a step minimizes: the mean cross-entropy of ``logits + offset`` in float32.

    ``logits`` are ``[B, classes]`` against targets ``[B]``, or a sequence model's
    ``[B, T, vocab]`` against the next token at every position ``[B, T]``.
    """
    logits = logits.float()
    if offset is not None:
        logits = logits + offset
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def proximal_penalty(
    params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], mu: float
) -> torch.Tensor:
    """``mu / 2 * sum ||p - a||^2`` over matching tensors: the pull toward ``anchor``."""
    total = torch.zeros((), dtype=params[0].dtype)
    for p, a in zip(params, anchor, strict=True):
        total = total + (p - a).pow(2).sum()
    return 0.5 * mu * total


def train_step(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    offset: torch.Tensor | None,
    penalty: Callable[[], torch.Tensor] | None = None,
    autocast: AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """One optimizer step on one minibatch; returns its (detached) :func:`training_loss`.

    Args:
        optimizer: From :func:`make_optimizer`.
        model: The model (or its parallel wrapper) to run.
        xb: The minibatch's inputs.
        yb: Its targets.
        offset: Added to the logits in the loss (logit adjustment), or None.
        penalty: Called after the forward pass; its value is added to the minimized
            loss (the proximal penalty), not to the returned one.
        autocast: Entered around the forward pass (bf16 on CUDA); the loss is float32.
    """

    def backward() -> torch.Tensor:
        with autocast if autocast is not None else nullcontext():
            logits = model(xb)
        loss = training_loss(logits, yb, offset)
        if penalty is not None:
            torch.autograd.backward(loss + penalty())
        else:
            torch.autograd.backward(loss)
        return loss

    return optimizer_step(optimizer, backward)


def optimizer_step(
    optimizer: torch.optim.Optimizer, backward: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """Zeroes the gradients, calls ``backward`` (which computes the loss and its
    gradients), steps the optimizer; returns the loss, detached.

    :func:`train_step` is this with a forward pass and :func:`training_loss`; a pipeline
    passes its schedule, which runs forward and backward over its microbatches itself.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = backward()
    optimizer.step()
    return loss.detach()


def step_batches(
    *,
    total: int,
    per_epoch: int,
    batch: int,
    order: Callable[[int], torch.Tensor],
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """The example indices of steps ``start`` to ``total - 1``, one minibatch per step.

    Epoch ``e`` takes ``order(e)`` (called once per epoch, in epoch order, and only when a
    step of that epoch is left) in ``per_epoch`` consecutive slices of ``batch`` (the last
    is shorter where ``order(e)`` holds fewer than ``per_epoch * batch`` indices). A resumed
    loop (``start > 0``) skips the steps already taken in its epoch.
    """
    step = start
    epoch, skip = divmod(start, per_epoch)
    while step < total:
        indices = order(epoch)
        for k in range(skip, per_epoch):
            yield indices[k * batch : (k + 1) * batch]
            step += 1
            if step == total:
                return
        epoch += 1
        skip = 0


def report_steps(total: int) -> set[int]:
    """The steps after which a hop of ``total`` steps reports progress: at most
    :data:`MAX_PROGRESS_CALLS`, spread evenly, the last one at ``total``."""
    calls = min(MAX_PROGRESS_CALLS, total)
    return {-(-k * total // calls) for k in range(1, calls + 1)}
