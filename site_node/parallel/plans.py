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

The vocabulary (plan kinds, plans, footprints) lives in :mod:`baton.ml.plans`, where the
model families declare the plans they support; the choice is the site's and lives here.
"""

from __future__ import annotations

from baton.errors import PlanError
from baton.ml.plans import ModelFootprint, ParallelPlan, PlanKind

__all__ = ["MEMORY_HEADROOM", "ModelFootprint", "ParallelPlan", "PlanKind", "choose_plan"]

MEMORY_HEADROOM = 0.8
"""Fraction of a device's free memory a plan may count on (allocator slack, buffers)."""


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
