"""The MLP family: input normalization, ``Linear -> ReLU`` blocks and a linear head.

Its tensor-parallel plan splits consecutive pairs of linear layers, the first by columns
and the second by rows (the activation between them is element-wise; an odd last layer
stays whole); a pipeline cuts it between its ``Linear -> ReLU (-> Dropout)`` groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.families.base import ALL_PLANS, Family, even_split
from baton.ml.norm import InputNorm
from baton.ml.plans import PlanKind

if TYPE_CHECKING:
    from torch.distributed.tensor.parallel import ParallelStyle


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


class MLPStage(nn.Module):
    """A run of an :class:`MLP`'s body (the first stage also normalizes the inputs).

    Holds the model's own submodules under their names in the model, so its state dict
    uses the model's keys (``input_norm.mean``, ``body.2.weight``).
    """

    def __init__(self, model: MLP, start: int, stop: int) -> None:
        super().__init__()
        self.input_norm: InputNorm | None = model.input_norm if start == 0 else None
        # Slicing a Sequential keeps the children's original names (indices).
        self.body = model.body[start:stop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the stage's layers."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        out: torch.Tensor = self.body(x)
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


def _linears(model: MLP) -> list[tuple[str, nn.Linear]]:
    return [(f"body.{n}", m) for n, m in model.body.named_children() if isinstance(m, nn.Linear)]


class MLPFamily(Family):
    """``mlp``: arguments ``hidden`` (layer widths, default ``[64]``) and ``dropout`` (0.0)."""

    name: ClassVar[str] = "mlp"
    args: ClassVar[tuple[str, ...]] = ("hidden", "dropout")
    model_type: ClassVar[type[nn.Module]] = MLP
    plans: ClassVar[frozenset[PlanKind]] = ALL_PLANS

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Builds an :class:`MLP`."""
        return MLP(
            num_features=num_features,
            num_classes=num_classes,
            hidden=_int_list("hidden", args.get("hidden", [64])),
            dropout=_fraction("dropout", args.get("dropout", 0.0)),
        )

    def _mlp(self, model: nn.Module) -> MLP:
        mlp = self.own(model)
        assert isinstance(mlp, MLP)
        return mlp

    def tp_plan(self, model: nn.Module) -> dict[str, ParallelStyle] | None:
        """Column-split then row-split for each consecutive pair of linear layers."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        linears = _linears(self._mlp(model))
        plan: dict[str, ParallelStyle] = {}
        for i in range(0, len(linears) - 1, 2):
            plan[linears[i][0]] = ColwiseParallel()
            plan[linears[i + 1][0]] = RowwiseParallel()
        return plan or None

    def tp_degrees(self, model: nn.Module, limit: int = 64) -> tuple[int, ...]:
        """Degrees dividing the output width of every column-split layer."""
        linears = _linears(self._mlp(model))
        split = [linears[i][1].out_features for i in range(0, len(linears) - 1, 2)]
        if not split:
            return ()
        return tuple(d for d in range(2, limit + 1) if all(w % d == 0 for w in split))

    def pp_units(self, model: nn.Module) -> int:
        """Its linear layers."""
        return len(_linears(self._mlp(model)))

    def cut(self, model: nn.Module, pp: int) -> list[nn.Module]:
        """The body's ``Linear -> ReLU (-> Dropout)`` groups split evenly, the input
        normalization with the first."""
        mlp = self._mlp(model)
        starts = [i for i, m in enumerate(mlp.body) if isinstance(m, nn.Linear)]
        cuts = [starts[run.start] for run in even_split(len(starts), pp)] + [len(mlp.body)]
        return [MLPStage(mlp, cuts[i], cuts[i + 1]) for i in range(pp)]
