"""The model registry: builds a registered model from its name, arguments and a seed.

Inputs are stored raw (not standardized) at every site, so every model starts with an
:class:`InputNorm` whose buffers ``mean``, ``std`` and ``fitted`` are part of the state
dict and travel with the weights. The first site to train fits them from its own training
split (:func:`fit_input_norm`); later sites keep them. What leaves the first site this way
is one mean and one standard deviation per feature: aggregates of the same kind as the
data profile a site publishes, never rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from baton.errors import DataError, ModelError
from baton.ml import models_lm

if TYPE_CHECKING:
    from baton.ml.data import Schema
    from baton.plan import RunPlan

logger = logging.getLogger(__name__)

_MIN_STD = 1e-6
"""A feature whose standard deviation is below this is centred but not scaled."""


class InputNorm(nn.Module):
    """Standardizes inputs with per-feature moments held in buffers.

    Until fitted (``fitted == 0``) it is the identity (``mean`` 0, ``std`` 1).
    """

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("fitted", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns ``(x - mean) / std``."""
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Input normalization, then ``Linear -> ReLU (-> Dropout)`` blocks, then a linear head."""

    def __init__(
        self, *, num_features: int, num_classes: int, hidden: list[int], dropout: float
    ) -> None:
        super().__init__()
        self.input_norm = InputNorm(num_features)
        layers: list[nn.Module] = []
        width = num_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits ``[n, num_classes]``."""
        out: torch.Tensor = self.body(self.input_norm(x))
        return out


class LogReg(nn.Module):
    """Multinomial logistic regression on normalized inputs."""

    def __init__(self, *, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.input_norm = InputNorm(num_features)
        self.linear = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits ``[n, num_classes]``."""
        out: torch.Tensor = self.linear(self.input_norm(x))
        return out


def _int_list(name: str, value: Any) -> list[int]:
    if not isinstance(value, list | tuple) or not value:
        raise ModelError(f"model argument {name!r} must be a non-empty list of integers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536:
            raise ModelError(f"model argument {name!r} must hold integers in [1, 65536]")
    return list(value)


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ModelError(f"model argument {name!r} must be a number in [0, 1)")
    return float(value)


def _build_mlp(args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    return MLP(
        num_features=num_features,
        num_classes=num_classes,
        hidden=_int_list("hidden", args.get("hidden", [64])),
        dropout=_fraction("dropout", args.get("dropout", 0.0)),
    )


def _build_logreg(args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    return LogReg(num_features=num_features, num_classes=num_classes)


_Builder = Callable[[Mapping[str, Any], int, int], nn.Module]
_REGISTRY: dict[str, tuple[tuple[str, ...], _Builder]] = {
    "mlp": (("hidden", "dropout"), _build_mlp),
    "logreg": ((), _build_logreg),
    models_lm.FAMILY: (models_lm.ARGS, models_lm.build_causal_lm),
}


def known_models() -> tuple[str, ...]:
    """Names of the registered models."""
    return tuple(_REGISTRY)


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
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(known_models())}")
    allowed, builder = _REGISTRY[name]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ModelError(
            f"unknown argument {unknown[0]!r} for model {name!r}; "
            f"known: {', '.join(allowed) or 'none'}"
        )
    if num_features < 1 or num_classes < 2:
        raise ModelError("a model needs at least 1 feature and 2 classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(args, num_features, num_classes)
    logger.debug("built model %s with %d features, %d classes", name, num_features, num_classes)
    return model


def plan_model(plan: RunPlan, schema: Schema) -> nn.Module:
    """The model a run plan names, sized for the task's schema, drawn from the plan's seed:
    every site builds hop 0's model (and checks incoming weights) against it."""
    return build_model(
        plan.model.name,
        plan.model.args,
        num_features=len(schema.feature_names),
        num_classes=schema.num_classes,
        seed=plan.run.seed,
    )


def has_input_norm(model: nn.Module) -> bool:
    """Whether the model standardizes its inputs (a language model reads token ids raw)."""
    return any(isinstance(m, InputNorm) for m in model.modules())


def is_sequence_model(model: nn.Module) -> bool:
    """Whether the model predicts the next token at every position of a window of tokens
    (logits ``[B, T, vocab]``) rather than one class per example (``[B, classes]``).

    Its examples are windows ``x`` ``[B, T]`` with ``y`` the token that follows; it trains
    on every position's next token (:func:`baton.ml.models_lm.sequence_targets`) and is
    scored on ``y``.
    """
    return isinstance(model, models_lm.CausalLM)


def input_norm_of(model: nn.Module) -> InputNorm:
    """The model's input normalization module.

    Raises:
        ModelError: The model has none.
    """
    for module in model.modules():
        if isinstance(module, InputNorm):
            return module
    raise ModelError("the model has no input normalization module")


def fit_input_norm(model: nn.Module, x: torch.Tensor) -> bool:
    """Fits the model's input normalization from ``x`` unless it is already fitted.

    Sets ``mean`` and ``std`` (population standard deviation; features with a standard
    deviation under 1e-6 get 1.0) and ``fitted = 1``.

    Returns:
        Whether it fitted (False when the model arrived already fitted).

    Raises:
        ModelError: The model has no input normalization.
        DataError: ``x`` is empty or has the wrong width.
    """
    norm = input_norm_of(model)
    if bool(norm.fitted.item()):
        return False
    if x.ndim != 2 or len(x) == 0 or x.shape[1] != norm.mean.shape[0]:
        raise DataError("input normalization needs a non-empty [n, num_features] tensor")
    with torch.no_grad():
        mean, std = input_statistics(x.to(dtype=norm.mean.dtype, device=norm.mean.device))
        norm.mean.copy_(mean)
        norm.std.copy_(std)
        norm.fitted.fill_(1.0)
    return True


def input_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and population standard deviation of ``[n, num_features]`` inputs,
    as :func:`fit_input_norm` fits them (a deviation under 1e-6, or a single row, gives 1)."""
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) if len(x) > 1 else torch.ones_like(mean)
    return mean, torch.where(std < _MIN_STD, torch.ones_like(std), std)
