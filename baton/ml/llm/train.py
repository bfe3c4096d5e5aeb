"""The training policy and the scoring of a causal language model on a site's token windows."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from baton.errors import DataError
from baton.ml.models_lm import sequence_targets

if TYPE_CHECKING:
    from baton.ml.data import Split
    from baton.plan import TrainingSection

__all__ = ["evaluate_lm", "lm_training"]

_EVAL_BATCH = 64


def _tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    if len(split) == 0:
        raise DataError("the split holds no examples")
    x = torch.from_numpy(split.x).long()
    return x, sequence_targets(x, torch.from_numpy(split.y))


def evaluate_lm(model: nn.Module, split: Split) -> dict[str, float]:
    """Scores ``model`` on every position of every window of ``split``, without gradients.

    Returns:
        ``loss`` (mean next-token cross-entropy over all positions), ``perplexity``
        (``exp(loss)``), ``tokens_per_s`` (positions scored per second) and
        ``num_examples`` (windows).

    Raises:
        DataError: The split is empty or holds tokens outside the model's vocabulary.
    """
    x, targets = _tensors(split)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    started = time.perf_counter()
    try:
        with torch.no_grad():
            for start in range(0, len(x), _EVAL_BATCH):
                logits = model(x[start : start + _EVAL_BATCH])
                tb = targets[start : start + _EVAL_BATCH]
                if int(tb.max()) >= logits.shape[-1] or int(tb.min()) < 0:
                    raise DataError(f"tokens fall outside the model's {logits.shape[-1]} ids")
                loss_sum += F.cross_entropy(
                    logits.flatten(0, 1), tb.flatten(), reduction="sum"
                ).double()
    finally:
        model.train(was_training)
    seconds = max(time.perf_counter() - started, 1e-9)
    positions = targets.numel()
    loss = float(loss_sum) / positions
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "tokens_per_s": positions / seconds,
        "num_examples": float(len(x)),
    }


def lm_training(training: TrainingSection) -> TrainingSection:
    """The plan's training policy for a language model: Baton's one training loop
    (:func:`baton.ml.trainer.train_local` in process, the site's parallel workers
    otherwise) on the next token at every position, without logit adjustment: a
    vocabulary has no label prior to correct."""
    return replace(training, logit_adjustment=False)
