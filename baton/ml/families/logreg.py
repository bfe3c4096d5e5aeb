"""The logistic regression family: one linear layer on normalized inputs, data parallel only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from baton.ml.families.base import Family
from baton.ml.norm import InputNorm


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


class LogRegFamily(Family):
    """``logreg``: no arguments; one layer has nothing to split or cut, so it is
    replicated (DDP) or sharded (FSDP) whole."""

    name: ClassVar[str] = "logreg"
    model_type: ClassVar[type[nn.Module]] = LogReg

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Builds a :class:`LogReg`."""
        return LogReg(num_features=num_features, num_classes=num_classes)
