"""The parallel plan of a hop: how many workers, and how the model is spread over them.

The choice is a pure function of the devices present, their free memory and an estimate
of what training the model needs (parameters, gradients, optimizer state, activations):

* one device: ``single``;
* the whole model state fits one device: ``ddp`` (replicate, all-reduce gradients);
* the state fits once sharded over every device: ``fsdp`` (FSDP2 ``fully_shard``);
* otherwise, for a model family with a tensor-parallel plan: ``tp`` over all devices, or
  ``fsdp_tp`` (FSDP2 across ``dp`` groups, tensor parallel inside each group of ``tp``)
  with the smallest ``tp`` that fits, since tensor parallelism communicates every layer.

An override (from the run plan or the site config) replaces the choice after checking it
can run on the devices and the model. Pipeline parallelism (``pp``: the model's layers cut
into ``pp`` consecutive stages, one per worker, the global batch run through them in
microbatches) is only ever used when asked for: the automatic choice never picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from baton.errors import PlanError

MEMORY_HEADROOM = 0.8
"""Fraction of a device's free memory a plan may count on (allocator slack, buffers)."""

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


def _fits(plan: ParallelPlan, model: ModelFootprint, budget: float) -> bool:
    """Whether one worker's share of ``model`` under ``plan`` fits ``budget`` bytes.

    DDP holds the whole state; FSDP shards it over every worker but gathers one unit at a
    time; data parallelism splits the activations by examples (so its degree must divide
    the global batch), tensor parallelism splits each layer's activations by columns, and
    pipeline parallelism holds the state and activations of its own layers only (roughly
    an equal share, as the stages hold equal numbers of layers).
    """
    world = plan.world_size
    if model.global_batch % plan.dp != 0:
        return False
    if plan.kind in (PlanKind.SINGLE, PlanKind.DDP):
        state = float(model.state_bytes)
    else:
        state = model.state_bytes / world
    if plan.kind in (PlanKind.FSDP, PlanKind.FSDP_TP):
        state += model.unit_bytes / plan.tp
    activations = model.activation_bytes / world
    return state + activations <= budget


def choose_plan(
    *,
    devices: int,
    free_bytes: int,
    model: ModelFootprint,
    override: ParallelPlan | None = None,
) -> ParallelPlan:
    """Picks the parallel plan for a hop.

    Args:
        devices: Devices (GPUs, or CPU worker slots) this hop may use.
        free_bytes: Free memory of the smallest device.
        model: What training the model needs.
        override: A plan asked for by the run plan or the site config; checked, then used
            as is even if the estimate says it does not fit (estimates are rough).

    Returns:
        The plan; ``single`` whenever ``devices`` is 1.

    Raises:
        PlanError: The override needs more devices than there are, or tensor or pipeline
            parallelism at a degree the model does not support; or, without an override,
            no plan fits.
    """
    if devices < 1:
        raise PlanError("a hop needs at least one device")
    if override is not None:
        return _checked(override, devices=devices, model=model)
    budget = free_bytes * MEMORY_HEADROOM
    single = ParallelPlan(kind=PlanKind.SINGLE)
    if devices == 1:
        if not _fits(single, model, budget):
            raise PlanError(_no_fit(model, devices, free_bytes))
        return single
    candidates = [
        ParallelPlan(kind=PlanKind.DDP, dp=devices),
        ParallelPlan(kind=PlanKind.FSDP, dp=devices),
    ]
    for tp in sorted(model.tp_degrees):
        if tp >= 2 and devices % tp == 0:
            kind = PlanKind.TP if tp == devices else PlanKind.FSDP_TP
            candidates.append(ParallelPlan(kind=kind, dp=devices // tp, tp=tp))
    for plan in candidates:
        if _fits(plan, model, budget):
            return plan
    raise PlanError(_no_fit(model, devices, free_bytes))


def _checked(plan: ParallelPlan, *, devices: int, model: ModelFootprint) -> ParallelPlan:
    if plan.world_size > devices:
        raise PlanError(
            f"plan {plan.kind} needs {plan.world_size} devices; this site has {devices}"
        )
    if plan.tp > 1 and plan.tp not in model.tp_degrees:
        supported = ", ".join(map(str, model.tp_degrees)) or "none"
        raise PlanError(
            f"plan {plan.kind} splits layers {plan.tp} ways; the model supports: {supported}"
        )
    if plan.pp > 1 and plan.pp not in model.pp_degrees:
        supported = ", ".join(map(str, model.pp_degrees)) or "none"
        raise PlanError(
            f"plan {plan.kind} cuts the model into {plan.pp} stages; "
            f"the model supports: {supported}"
        )
    return plan


def _no_fit(model: ModelFootprint, devices: int, free_bytes: int) -> str:
    need = (model.state_bytes + model.activation_bytes) / 2**20
    return (
        f"no parallel plan fits: training needs about {need:.0f} MiB, and {devices} "
        f"device(s) have {free_bytes / 2**20:.0f} MiB free each"
    )
