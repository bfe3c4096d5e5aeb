"""Pipeline parallelism for a hop: the model's layers cut into stages, one per worker.

Rank ``i`` holds stage ``i`` (the model family's ``pp_stages``, :mod:`baton.ml.families`)
on its device and runs a 1F1B schedule (GPipe when the global batch has fewer microbatches
than stages) from ``torch.distributed.pipelining``. Each global batch runs as equal
microbatches; the schedule takes each microbatch's mean loss and divides the summed
gradients by their number, so a step is the step one process takes on the whole batch.
Weights travel between rank 0 and the stages with plain ``send``/``recv`` of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from baton.ml.families import family_of
from baton.ml.step import training_loss

MICROBATCHES_PER_STAGE = 4
"""A pipeline runs each global batch as up to this many microbatches per stage (fewer if
the global batch has no such divisor): more microbatches leave the stages idle for less
of each step (the pipeline's fill and drain) but make each matrix product smaller."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Pipeline:
    """This rank's part of a pipeline plan: every stage, and the schedule of its own."""

    schedule: Schedule1F1B | ScheduleGPipe
    stages: list[nn.Module]
    """Every stage of the model, in order (rank ``i`` runs stage ``i``); only this rank's
    own stage is on its device and trained here."""
    rank: int
    microbatches: int

    @property
    def first(self) -> bool:
        """Whether this rank feeds the inputs."""
        return self.rank == 0

    @property
    def last(self) -> bool:
        """Whether this rank computes the loss (and so holds the loss curve)."""
        return self.rank == len(self.stages) - 1


def microbatches(batch: int, stages: int) -> int:
    """The most microbatches, at most ``MICROBATCHES_PER_STAGE * stages``, that split
    ``batch`` into equal parts (equal parts keep the mean of their mean losses equal to
    the mean loss of the whole batch)."""
    limit = min(batch, MICROBATCHES_PER_STAGE * stages)
    return max(m for m in range(1, limit + 1) if batch % m == 0)


def build(
    model: nn.Module,
    *,
    pp: int,
    batch_size: int,
    device: torch.device,
    offset: torch.Tensor | None,
) -> tuple[nn.Module, Pipeline]:
    """Cuts ``model`` into the plan's stages and builds this rank's stage and schedule.

    The schedule calls the loss on each microbatch's logits with its mean over the
    microbatch and divides the summed gradients by the number of microbatches
    (``scale_grads``): with equal microbatches that is the gradient of the mean loss over
    the global batch, the step one process takes. The loss is the one every path trains
    on (:func:`baton.ml.step.training_loss`, ``offset`` added to the logits).
    """
    stages = family_of(model).pp_stages(model, pp)
    rank = dist.get_rank()
    stage = stages[rank].to(device)
    count = microbatches(batch_size, len(stages))

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return training_loss(logits, target, offset)

    pipe_stage = PipelineStage(stage, rank, len(stages), device)
    # 1F1B keeps at most one microbatch per stage in flight; it needs as many microbatches
    # as stages, which a small global batch may not have.
    schedule_cls = Schedule1F1B if count >= len(stages) else ScheduleGPipe
    schedule = schedule_cls(pipe_stage, n_microbatches=count, loss_fn=loss_fn)
    return stage, Pipeline(schedule=schedule, stages=stages, rank=rank, microbatches=count)


def _stage_tensors(stage: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A stage's parameters and buffers under the model's names, in a fixed order."""
    return list(stage.state_dict().items())


def scatter_stages(pipeline: Pipeline, device: torch.device) -> None:
    """Sends every other stage's weights from rank 0 (which read the weights) to its rank."""
    for owner, stage in enumerate(pipeline.stages):
        if owner == 0 or pipeline.rank not in (0, owner):
            continue
        for _, tensor in _stage_tensors(stage):
            if pipeline.rank == 0:
                dist.send(tensor.to(device).contiguous(), dst=owner)
            else:
                dist.recv(tensor, src=0)  # in place: state_dict tensors share the storage


def gather_stages(pipeline: Pipeline, device: torch.device) -> dict[str, torch.Tensor]:
    """The full state on rank 0 (``{}`` elsewhere): every stage's trained tensors under the
    model's names; every rank calls it."""
    full: dict[str, torch.Tensor] = {}
    for owner, stage in enumerate(pipeline.stages):
        if pipeline.rank not in (0, owner):
            continue
        for key, tensor in _stage_tensors(stage):
            if owner == pipeline.rank == 0:
                full[key] = tensor.detach().cpu().clone()
            elif pipeline.rank == 0:
                received = torch.empty_like(tensor, device=device)
                dist.recv(received, src=owner)
                full[key] = received.cpu()
            else:
                dist.send(tensor.detach().contiguous(), dst=0)
    return full


def step(pipeline: Pipeline, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Runs one global batch through the pipeline (forward and backward of every
    microbatch); returns the mean loss on the last stage, NaN on the others."""
    if pipeline.first:
        pipeline.schedule.step(xb)
    elif pipeline.last:
        parts: list[torch.Tensor] = []
        pipeline.schedule.step(target=yb, losses=parts)
        return torch.stack(parts).detach().mean()
    else:
        pipeline.schedule.step()
    return torch.full((), math.nan, device=yb.device)
