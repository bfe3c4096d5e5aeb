"""Local training and evaluation of the travelling model on one site's data (CPU, seeded)."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from baton.errors import DataError, ModelError, TrainingInterrupted
from baton.ml import checkpoint
from baton.ml.models import is_sequence_model
from baton.ml.models_lm import sequence_targets
from baton.ml.norm import fit_input_norm, has_input_norm
from baton.ml.step import (
    log_prior,
    make_optimizer,
    proximal_penalty,
    report_steps,
    step_batches,
    train_step,
)

if TYPE_CHECKING:
    from baton.ml.data import Split
    from baton.plan import TrainingSection

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]
"""``progress(step, total_steps, loss)``: called after ``step`` of ``total_steps``."""

_EVAL_BATCH = 4096
_SEED_MODULUS = 2**63


def hop_seed(run_seed: int, hop_index: int) -> int:
    """The seed of hop ``hop_index`` (0-based, across all cycles) of a run.

    ``(run_seed * 1_000_003 + hop_index) mod 2**63``: distinct for the hops of one run,
    always a valid non-negative 64-bit seed. The site daemon and the simulator both use it.
    """
    return (run_seed * 1_000_003 + hop_index) % _SEED_MODULUS


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """What one local training pass did."""

    num_examples: int
    """Training examples at this site."""
    steps: int
    """Optimizer steps taken."""
    train_seconds: float
    """Wall-clock seconds spent training."""
    final_loss: float
    """Mean training loss (logit-adjusted, if enabled) over the last epoch's steps, or
    over all steps if fewer."""
    resumed_from_step: int = 0
    """Steps the hop had already taken when this pass resumed it from a within-hop
    checkpoint; 0 when it started from the incoming model."""


def _tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    if len(split) == 0:
        raise DataError("the split holds no examples")
    return torch.from_numpy(split.x), torch.from_numpy(split.y)


def _check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Checks the labels fit the model's outputs; returns the number of outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            num_outputs = int(model(x[:1]).shape[-1])
    finally:
        model.train(was_training)
    if int(y.min()) < 0 or int(y.max()) >= num_outputs:
        raise DataError(f"labels fall outside the model's {num_outputs} classes")
    return num_outputs


def evaluate(model: nn.Module, split: Split) -> dict[str, float]:
    """Evaluates ``model`` on ``split`` in eval mode, without gradients.

    Returns:
        ``accuracy`` (fraction correct), ``loss`` (mean cross-entropy) and
        ``num_examples``.

    Raises:
        DataError: The split is empty or has labels the model cannot output.
    """
    x, y = _tensors(split)
    _check_labels(model, x, y)
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        with torch.no_grad():
            for start in range(0, len(y), _EVAL_BATCH):
                xb, yb = x[start : start + _EVAL_BATCH], y[start : start + _EVAL_BATCH]
                logits = model(xb)
                if logits.ndim == 3:
                    logits = logits[:, -1]  # a sequence model is scored on the next token
                loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
                correct += (logits.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    n = len(y)
    return {
        "accuracy": int(correct) / n,
        "loss": float(loss_sum) / n,
        "num_examples": float(n),
    }


def total_steps(num_examples: int, training: TrainingSection) -> int:
    """Optimizer steps of one hop: ``local_steps`` if positive, else
    ``local_epochs * ceil(num_examples / batch_size)``.

    With ``training.proportional_steps`` that count is taken for a site of
    ``reference_examples`` examples and scaled by ``num_examples / reference_examples``
    (rounded, at least 1 step).
    """
    if training.proportional_steps:
        reference = training.reference_examples
        base = training.local_steps
        if base <= 0:
            base = training.local_epochs * math.ceil(reference / training.batch_size)
        return max(1, round(base * num_examples / reference))
    if training.local_steps > 0:
        return training.local_steps
    return training.local_epochs * math.ceil(num_examples / training.batch_size)


def hop_lr(training: TrainingSection, hop_index: int, num_sites: int) -> float:
    """The learning rate of hop ``hop_index`` in a run over ``num_sites`` sites.

    ``training.lr`` under the ``constant`` schedule, for one site, and at the first hop of
    every cycle; under ``cyclical`` it falls along the cycle by a half cosine to
    ``lr * lr_min_ratio`` at the cycle's last hop (see ``TrainingSection.lr_schedule``).
    Either rate is then multiplied by ``cycle_decay ** c`` for the hop's 0-based cycle
    ``c = hop_index // num_sites`` (see ``TrainingSection.cycle_decay``).

    Raises:
        ValueError: ``hop_index`` is negative or ``num_sites`` is below 1.
    """
    if hop_index < 0 or num_sites < 1:
        raise ValueError(f"need hop_index >= 0 and num_sites >= 1, not {hop_index}, {num_sites}")
    cycle, position = divmod(hop_index, num_sites)
    lr = training.lr * training.cycle_decay**cycle
    if training.lr_schedule == "constant" or position == 0:
        return lr
    ratio = training.lr_min_ratio
    if position == num_sites - 1:
        return lr * ratio
    weight = 0.5 * (1.0 + math.cos(math.pi * position / (num_sites - 1)))
    return lr * (ratio + (1.0 - ratio) * weight)


def train_local(
    model: nn.Module,
    split: Split,
    training: TrainingSection,
    *,
    seed: int,
    hop_index: int = 0,
    num_sites: int = 1,
    progress: ProgressFn | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Trains ``model`` in place on one site's training split.

    Fits the model's input normalization first if it is not fitted yet (the first hop).
    With ``training.logit_adjustment`` (the default) the loss is the cross-entropy of
    ``logits + log(prior)``, where ``prior`` is the site's add-one smoothed label
    distribution (logit adjustment, Menon et al. 2021; FedLC, Zhang et al. 2022). The
    model then learns class scores free of the site's label skew, so a site holding
    mostly one class no longer drags the travelling model toward predicting that class
    everywhere; prediction uses the raw logits.

    A fresh optimizer (SGD with momentum and weight decay, or Adam) takes shuffled
    minibatches (the last of an epoch may be smaller) for :func:`total_steps` steps. The
    shuffles and any dropout draw from ``seed`` only; the global torch RNG is forked, so
    its state is unchanged. The result is deterministic given the incoming weights, the
    data, ``training`` and ``seed`` (on one thread count).

    The forgetting remedies of ``training`` apply here: the step count of
    :func:`total_steps` (proportional to the site's size if asked), the learning rate of
    :func:`hop_lr` for this hop's place in its cycle, and the proximal penalty toward the
    incoming weights (added to the loss that is minimized; the reported loss leaves it out).

    Within-hop checkpoints (:mod:`baton.ml.checkpoint`, in ``checkpoint_dir``) hold the
    model, the optimizer, the steps taken, the losses so far and both RNG states (the
    shuffle generator as it was before the current epoch's permutation, and the global
    one that dropout draws from), so a hop that finds one resumes from it and ends with
    exactly the model of an uninterrupted hop. A checkpoint that cannot be used (corrupt,
    truncated, from another model) is logged and deleted, and the hop trains again from
    step 0: it is a cache of a deterministic computation, so starting over costs time but
    never changes the result, where failing the hop would lose it. ``checkpoint_dir`` is
    removed when training completes; an interrupted or failed pass leaves it to the caller.

    Args:
        model: The travelling model (as it arrived: a resumed hop needs its incoming
            weights for the proximal penalty); trained in place, left in its previous mode.
        split: The site's training split.
        training: The plan's local training policy.
        seed: This hop's seed, from :func:`hop_seed`.
        hop_index: This hop's 0-based index across the run (for a cyclical schedule).
        num_sites: Sites per cycle, the cycle's length (for a cyclical schedule).
        progress: Called at most :data:`~baton.ml.step.MAX_PROGRESS_CALLS` times as
            ``(step, total_steps, loss)`` with the loss of that step's minibatch.
        checkpoint_dir: This hop's private checkpoint directory; None: no checkpoints.
        checkpoint_every: Optimizer steps between checkpoints; 0: none written.
        should_stop: Asked after every step; True checkpoints the hop (with a
            ``checkpoint_dir``) and stops it.

    Raises:
        DataError: The split is empty or has labels the model cannot output.
        ModelError: Training diverged (a non-finite loss).
        TrainingInterrupted: ``should_stop`` said so.
    """
    x, y = _tensors(split)
    n = len(y)
    num_outputs = _check_labels(model, x, y)
    if has_input_norm(model) and fit_input_norm(model, x):
        logger.info("fitted the model's input normalization on %d local examples", n)
    # A sequence model learns the next token at every position of each window.
    sequence = is_sequence_model(model)
    targets = sequence_targets(x, y) if sequence else y
    total = total_steps(n, training)
    reports = report_steps(total) if progress is not None else set()
    steps_per_epoch = math.ceil(n / training.batch_size)
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]

    def new_optimizer() -> torch.optim.Optimizer:
        return make_optimizer(
            params,
            name=training.optimizer,
            lr=hop_lr(training, hop_index, num_sites),
            momentum=training.momentum,
            weight_decay=training.weight_decay,
        )

    optimizer = new_optimizer()
    mu = training.proximal_mu
    anchor = [p.detach().clone() for p in params] if mu > 0 else []
    penalty = (lambda: proximal_penalty(params, anchor, mu)) if mu > 0 else None
    offset = log_prior(targets.flatten(), num_outputs) if training.logit_adjustment else None
    losses: list[torch.Tensor] = []
    start = 0
    was_training = model.training
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        # The epoch whose permutation was drawn last, and the generator's state before it.
        drawn: list[tuple[int, torch.Tensor]] = []

        def order(epoch: int) -> torch.Tensor:
            drawn[:] = [(epoch, generator.get_state())]
            return torch.randperm(n, generator=generator)

        def loop_state(step: int) -> dict[str, torch.Tensor]:
            epoch = step // steps_per_epoch
            before = drawn[0][1] if drawn and drawn[0][0] == epoch else generator.get_state()
            shuffle = {"rng/shuffle": before, "rng/torch": torch.get_rng_state()}
            return {**shuffle, "losses": torch.stack(losses) if losses else torch.empty(0)}

        if checkpoint_dir is not None:
            try:
                start, state = _resume(model, optimizer, checkpoint_dir, loop_state, total)
            except ModelError as exc:
                logger.warning("%s; training the hop again from step 0", exc.message)
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
                optimizer = new_optimizer()
            else:
                if start:
                    generator.set_state(state["rng/shuffle"])
                    torch.set_rng_state(state["rng/torch"])
                    losses = list(state["losses"].unbind())
                    logger.info(
                        "hop %d: resumed from its checkpoint at step %d", hop_index + 1, start
                    )
        model.train()
        try:
            batches = step_batches(
                total=total,
                per_epoch=steps_per_epoch,
                batch=training.batch_size,
                order=order,
                start=start,
            )
            for step, idx in enumerate(batches, start=start + 1):
                loss = train_step(
                    optimizer, model, x[idx], targets[idx], offset=offset, penalty=penalty
                )
                losses.append(loss)
                if progress is not None and step in reports:
                    progress(step, total, float(loss))
                stop = should_stop is not None and should_stop() and step < total
                due = checkpoint_every > 0 and step % checkpoint_every == 0 and step < total
                if checkpoint_dir is not None and (stop or due):
                    checkpoint.save(
                        model, optimizer, step=step, directory=checkpoint_dir, rank=0,
                        extra=loop_state(step),
                    )  # fmt: skip
                if stop:
                    raise TrainingInterrupted(f"stopped after step {step} of {total}")
        finally:
            model.train(was_training)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    final_loss = float(torch.stack(losses[max(0, total - steps_per_epoch) :]).mean())
    if not math.isfinite(final_loss):
        raise ModelError("local training diverged: the training loss is not finite")
    logger.debug("trained %d steps on %d examples in %.3f s", total, n, seconds)
    return TrainResult(
        num_examples=n,
        steps=total,
        train_seconds=seconds,
        final_loss=final_loss,
        resumed_from_step=start,
    )


def _resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: Path,
    loop_state: Callable[[int], dict[str, torch.Tensor]],
    total: int,
) -> tuple[int, dict[str, torch.Tensor]]:
    """Loads the newest checkpoint in ``directory`` into ``model`` and ``optimizer``;
    returns its step and loop state, or ``(0, {})`` when there is none.

    The incoming weights are kept until the checkpoint loaded whole, so a checkpoint that
    does not fit leaves ``model`` as it arrived.

    Raises:
        ModelError: The checkpoint cannot be used; ``model`` is as it arrived.
    """
    found = checkpoint.latest(directory)
    if found is None:
        return 0, {}
    step, path = found
    if not 0 < step < total:
        raise ModelError(f"the checkpoint at {path} is of step {step}, not of a hop of {total}")
    incoming = {k: v.detach().clone() for k, v in model.state_dict().items()}
    template = loop_state(step)
    template["losses"] = torch.empty(step, dtype=torch.float32)
    try:
        state = checkpoint.load(model, optimizer, path, rank=0, extra=template)
        for name in ("rng/shuffle", "rng/torch"):
            torch.Generator().set_state(state[name])  # a malformed state fails here
    except Exception as exc:  # whatever went wrong, the hop starts over from its input
        model.load_state_dict(incoming)
        message = exc.message if isinstance(exc, ModelError) else str(exc)
        raise ModelError(f"the hop's checkpoint at {path} cannot be used: {message}") from None
    return step, state
