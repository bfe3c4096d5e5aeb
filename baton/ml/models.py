"""Building a registered model from its name, arguments and a seed (:mod:`baton.ml.families`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.families import FAMILIES, family, known_families

if TYPE_CHECKING:
    from baton.ml.data import Schema
    from baton.plan import RunPlan

logger = logging.getLogger(__name__)


def known_models() -> tuple[str, ...]:
    """Names of the registered models."""
    return known_families()


def build_model(
    name: str, args: Mapping[str, Any], *, num_features: int, num_classes: int, seed: int
) -> nn.Module:
    """Builds a registered model with weights drawn deterministically from ``seed``.

    The global torch RNG is forked for the draw, so its state is the same afterwards.

    Args:
        name: A name from :func:`known_models`.
        args: The model's keyword arguments: for ``mlp``, ``hidden`` (list of layer
            widths, default ``[64]``) and ``dropout`` (default 0.0); ``logreg`` takes none;
            ``causal_lm`` takes ``dim``, ``layers``, ``heads`` and ``hidden``
            (:func:`baton.ml.models_lm.build_causal_lm`).
        num_features: Input width (the context length of ``causal_lm``).
        num_classes: Output width (at least 2; the vocabulary of ``causal_lm``).
        seed: Seed of the initial weights.

    Raises:
        ModelError: Unknown name, unknown argument, or an argument of the wrong type.
    """
    found = family(name)
    unknown = sorted(set(args) - set(found.args))
    if unknown:
        raise ModelError(
            f"unknown argument {unknown[0]!r} for model {name!r}; "
            f"known: {', '.join(found.args) or 'none'}"
        )
    if num_features < 1 or num_classes < 2:
        raise ModelError("a model needs at least 1 feature and 2 classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = found.build(args, num_features, num_classes)
    logger.debug("built model %s with %d features, %d classes", name, num_features, num_classes)
    return model


def plan_model(plan: RunPlan, schema: Schema) -> nn.Module:
    """The model a run plan names, sized for the task's schema, drawn from the plan's seed:
    every site builds hop 0's model (and checks incoming weights) against it."""
    return build_model(
        plan.model.name,
        plan.model.args,
        num_features=schema.num_inputs,
        num_classes=schema.num_classes,
        seed=plan.run.seed,
    )


def is_sequence_model(model: nn.Module) -> bool:
    """Whether the model predicts the next token at every position of a window of tokens
    (logits ``[B, T, vocab]``) rather than one class per example (``[B, classes]``).

    Its examples are windows ``x`` ``[B, T]`` with ``y`` the token that follows; it trains
    on every position's next token (:func:`baton.ml.models_lm.sequence_targets`) and is
    scored on ``y``.
    """
    return any(f.sequence and isinstance(model, f.model_type) for f in FAMILIES.values())
