"""Input normalization that travels with the weights, fitted once by the first site.

Inputs are stored raw (not standardized) at every site, so every tabular model starts with
an :class:`InputNorm` whose buffers ``mean``, ``std`` and ``fitted`` are part of the state
dict and travel with the weights. The first site to train fits them from its own training
split (:func:`fit_input_norm`); later sites keep them. What leaves the first site this way
is one mean and one standard deviation per feature: aggregates of the same kind as the
data profile a site publishes, never rows.

Missing values (NaN, where a task's schema imputes them) are imputed with that mean: the
first site fits the moments over the values it has, and a NaN input standardizes to 0, the
fitted mean. A categorical feature travels as one-hot columns, so a missing category is
imputed with the first site's level frequencies.
"""

from __future__ import annotations

import torch
from torch import nn

from baton.errors import DataError, ModelError

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
        """Returns ``(x - mean) / std``, with 0 (the mean) where ``x`` is NaN."""
        z = (x - self.mean) / self.std
        return torch.where(torch.isnan(z), torch.zeros((), dtype=z.dtype, device=z.device), z)


def has_input_norm(model: nn.Module) -> bool:
    """Whether the model standardizes its inputs (a language model reads token ids raw)."""
    return any(isinstance(m, InputNorm) for m in model.modules())


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
    as :func:`fit_input_norm` fits them (a deviation under 1e-6, or a single row, gives 1).

    NaN entries (missing values) are left out of their feature's moments; a feature with no
    value at all gets mean 0 and deviation 1.
    """
    missing = torch.isnan(x)
    if bool(missing.any()):
        return _nan_statistics(x, missing)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) if len(x) > 1 else torch.ones_like(mean)
    return mean, torch.where(std < _MIN_STD, torch.ones_like(std), std)


def _nan_statistics(x: torch.Tensor, missing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    present = (~missing).sum(dim=0)
    filled = torch.where(missing, torch.zeros((), dtype=x.dtype), x)
    mean = filled.sum(dim=0) / present.clamp(min=1)
    centred = torch.where(missing, torch.zeros((), dtype=x.dtype), x - mean)
    std = (centred.square().sum(dim=0) / present.clamp(min=1)).sqrt()
    std = torch.where((present > 1) & (std >= _MIN_STD), std, torch.ones_like(std))
    return torch.where(present > 0, mean, torch.zeros_like(mean)), std
