"""The parallel plan vocabulary: plan kinds, a plan's mesh shape, and a model's footprint.

Model families declare which plan kinds can train them (:mod:`baton.ml.families`); a site
chooses its plan among them from its devices and the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}
"""Tensors of optimizer state per parameter (SGD momentum; Adam's two moments)."""


class PlanKind(StrEnum):
    """How the model is spread over the workers."""

    SINGLE = "single"
    DDP = "ddp"
    FSDP = "fsdp"
    TP = "tp"
    FSDP_TP = "fsdp_tp"
    PP = "pp"


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelPlan:
    """A plan: its kind and the shape of its device mesh (``dp`` x ``tp`` x ``pp`` workers)."""

    kind: PlanKind
    """How the model is spread."""
    dp: int = 1
    """Data-parallel degree: groups that see different examples."""
    tp: int = 1
    """Tensor-parallel degree: workers inside a group that split each layer."""
    pp: int = 1
    """Pipeline-parallel degree: consecutive stages of layers, one worker each."""

    def __post_init__(self) -> None:
        if self.dp < 1 or self.tp < 1 or self.pp < 1:
            raise ValueError("a plan needs at least one worker in each mesh dimension")
        expected = {
            PlanKind.SINGLE: self.dp == 1 and self.tp == 1,
            PlanKind.DDP: self.tp == 1,  # one worker is a valid smoke test of the wrapping
            PlanKind.FSDP: self.dp >= 2 and self.tp == 1,
            PlanKind.TP: self.dp == 1 and self.tp >= 2,
            PlanKind.FSDP_TP: self.dp >= 2 and self.tp >= 2,
            PlanKind.PP: self.dp == 1 and self.tp == 1 and self.pp >= 2,
        }[self.kind]
        if self.kind != PlanKind.PP and self.pp != 1:
            expected = False
        if not expected:
            raise ValueError(
                f"plan {self.kind} cannot have dp={self.dp}, tp={self.tp}, pp={self.pp}"
            )

    @property
    def world_size(self) -> int:
        """Worker processes the plan needs."""
        return self.dp * self.tp * self.pp


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelFootprint:
    """What training one model needs, for the plan choice."""

    num_params: int
    """Trainable parameters."""
    bytes_per_param: int = 4
    """Bytes of one parameter (and of one gradient or optimizer-state element)."""
    optimizer: str = "sgd"
    """``sgd``, ``adam`` or ``adamw``: decides the optimizer state per parameter."""
    activation_bytes: int = 0
    """Activations of one global batch kept for the backward pass, all layers together."""
    global_batch: int = 2**31
    """Examples per optimizer step: the data-parallel degree must divide it."""
    unit_bytes: int = 0
    """Parameters of the largest unit FSDP gathers at once (a transformer block)."""
    tp_degrees: tuple[int, ...] = ()
    """Tensor-parallel degrees the model family supports (its heads and hidden widths
    divide by them); empty if the family has no tensor-parallel plan."""
    pp_degrees: tuple[int, ...] = ()
    """Pipeline-parallel degrees (numbers of stages) the model family can be cut into;
    empty if the family has no pipeline plan."""

    def __post_init__(self) -> None:
        sizes = (self.activation_bytes, self.unit_bytes)
        if (
            self.num_params < 1
            or self.bytes_per_param < 1
            or self.global_batch < 1
            or min(sizes) < 0
        ):
            raise ValueError("a model footprint needs positive sizes")
        if self.optimizer not in _OPTIMIZER_STATES:
            raise ValueError(f"unknown optimizer {self.optimizer!r}")

    @property
    def state_bytes(self) -> int:
        """Parameters, gradients and optimizer state together."""
        return self.num_params * self.bytes_per_param * (2 + _OPTIMIZER_STATES[self.optimizer])
