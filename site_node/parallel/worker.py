"""One training worker of a hop: joins the process group, applies the plan, trains, exports.

Started by ``torchrun -m site_node.parallel.worker JOB`` (rank and world from the
environment), by a fork of a process that has torch imported (CPU tests), or called in
process for the single plan. Every rank follows the same steps:

1. init the process group (gloo on CPU; NCCL and bf16 autocast on CUDA) with a timeout;
2. build the model; load the weights (rank 0 then broadcast, or every rank);
3. apply the plan: DDP, FSDP2 ``fully_shard``, tensor parallel, FSDP2 x TP on a 2-D mesh,
   or a pipeline (rank ``i`` holds stage ``i`` of the model's layers on its device);
4. resume from the newest within-hop checkpoint, if any;
5. train: a ``DistributedSampler`` (``drop_last``) over the data-parallel ranks, each taking
   ``batch_size / dp`` examples, so the global batch is the same whatever the plan; a
   pipeline runs each global batch as equal microbatches (1F1B schedule) and scales the
   summed gradients by their number, so it takes the same step as one process;
6. gather the full state dict on every rank; rank 0 writes it atomically, then the result.

A failing rank writes its reason to ``errors/rank-N.json`` for the launcher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.utils.data import DistributedSampler, TensorDataset

from baton.errors import BatonError, DataError, ModelError, PlanError
from baton.io import atomic_write
from baton.ml.codec import load_into, load_state_file, save_state_file, state_of
from baton.ml.families import Family, family
from baton.ml.norm import fit_input_norm, has_input_norm
from baton.ml.plans import PlanKind
from baton.ml.step import (
    log_prior,
    make_optimizer,
    optimizer_step,
    report_steps,
    step_batches,
    train_step,
)
from site_node.parallel import checkpoint, families
from site_node.parallel import pipeline as pipeline_mod
from site_node.parallel.job import Job

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Placed:
    """A model after its plan: what to call in the loop, and this rank's data share."""

    module: nn.Module
    dp_size: int
    dp_rank: int
    pipeline: pipeline_mod.Pipeline | None = None


def run_worker(job_path: Path, *, rank: int, world_size: int, init_method: str | None) -> None:
    """Runs one rank of the job at ``job_path``; reports a failure to ``errors/`` and re-raises.

    Args:
        job_path: The job file.
        rank: This worker's rank.
        world_size: Workers in all; must equal the plan's ``world_size``.
        init_method: Process-group rendezvous (``env://``, ``file://...``); None only for a
            single worker, which then runs without a process group.
    """
    job = Job.read(job_path)
    try:
        # Forked: seeding here leaves the caller's RNG (a daemon's, in process) untouched.
        with torch.random.fork_rng(devices=[]):
            _run(job, rank=rank, world_size=world_size, init_method=init_method)
    except BaseException as exc:
        _report_failure(job, rank, exc)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _report_failure(job: Job, rank: int, exc: BaseException) -> None:
    reason = exc.message if isinstance(exc, BatonError) else str(exc).splitlines()[0:1]
    text = reason if isinstance(reason, str) else (reason[0] if reason else "")
    job.errors_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "rank": rank,
        "type": type(exc).__name__,
        "message": text[:500],
        "time": time.time(),
        "baton": isinstance(exc, BatonError),
    }
    (job.errors_dir / f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    logger.error("rank %d failed: %s", rank, "".join(traceback.format_exception(exc))[-4000:])


def _run(job: Job, *, rank: int, world_size: int, init_method: str | None) -> None:
    plan = job.plan
    if world_size != plan.world_size:
        raise PlanError(f"plan {plan.kind} needs {plan.world_size} workers, not {world_size}")
    device = torch.device("cpu")
    if job.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if world_size == 1 and plan.kind != PlanKind.SINGLE and init_method is None:
        # A one-worker DDP (a smoke test of the wrapping) still needs a process group.
        init_method = f"file://{job.dir / 'rendezvous'}"
    if world_size > 1 or plan.kind != PlanKind.SINGLE:
        if init_method is None:
            raise PlanError("several workers need a rendezvous")
        dist.init_process_group(
            backend="nccl" if job.device == "cuda" else "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=job.timeout_s),
        )
    data = load_state_file(job.data_path)
    if set(data) != {"x", "y"} or len(data["x"]) != len(data["y"]) or len(data["y"]) == 0:
        raise DataError("the training data must hold non-empty 'x' and 'y' of equal length")
    x, y = data["x"], data["y"]
    torch.manual_seed(job.training.seed)
    fam = family(job.model.name)
    model = families.build(job.model)
    full: dict[str, torch.Tensor] = {}
    if rank == 0 or not job.broadcast_from_rank0:
        full = load_state_file(job.weights_path)
        load_into(model, full)
    if plan.kind != PlanKind.PP:
        model.to(device)  # a pipeline moves only its own stage
    offset = None
    if job.training.logit_adjustment:
        offset = log_prior(y.flatten(), job.model.num_classes).to(device)
    placed = _apply_plan(model, fam, job, device, offset)
    if placed.pipeline is not None:
        if job.broadcast_from_rank0:
            pipeline_mod.scatter_stages(placed.pipeline, device)
    elif world_size > 1 and job.broadcast_from_rank0:
        # The call empties the dict it is given; rank 0 passes the full state, others none.
        set_model_state_dict(
            model,
            dict(full),
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
    del full
    # A language model reads token ids raw: it has no input normalization.
    if has_input_norm(model) and fit_input_norm(model, x):
        logger.info("fitted the model's input normalization on %d examples", len(x))
    t = job.training
    # A pipeline rank optimizes its own stage only (DDP's wrapper yields the model's).
    optimizer = make_optimizer(
        (p for p in placed.module.parameters() if p.requires_grad),
        name=t.optimizer,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
    )
    start = 0
    found = checkpoint.latest(job.checkpoint_dir)
    if found is not None:
        start, path = found
        checkpoint.load(placed.module, optimizer, path, rank=rank)
        logger.info("resumed the hop from the checkpoint at step %d", start)
    stats = _train(
        job, placed, optimizer, x, y, offset=offset, rank=rank, start=start, device=device
    )
    if placed.pipeline is not None:
        full_state = pipeline_mod.gather_stages(placed.pipeline, device)
        stats["microbatches"] = placed.pipeline.microbatches
    else:
        full_state = _export(model, world_size)
    if rank == 0:
        save_state_file(job.output_path, full_state)
        result = {**stats, "resumed_from": start, "plan": str(plan.kind)}
        atomic_write(job.result_path, json.dumps(result))


def _apply_plan(
    model: nn.Module, fam: Family, job: Job, device: torch.device, offset: torch.Tensor | None
) -> _Placed:
    plan = job.plan
    kind = plan.kind
    if kind == PlanKind.SINGLE:
        return _Placed(module=model, dp_size=1, dp_rank=0)
    if kind == PlanKind.DDP:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return _Placed(
            module=DistributedDataParallel(model, device_ids=ids),
            dp_size=plan.dp,
            dp_rank=dist.get_rank(),
        )
    if kind == PlanKind.PP:
        stage, pipe = pipeline_mod.build(
            model, pp=plan.pp, batch_size=job.training.batch_size, device=device, offset=offset
        )
        return _Placed(module=stage, dp_size=1, dp_rank=0, pipeline=pipe)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # FSDP2 warns when a model returns a view (a batched Linear does), because an in-place
    # op on it would skip the all-gather; the training loop only uses out-of-place ops.
    warnings.filterwarnings(
        "ignore", message=r"FSDP2-wrapped module \(.*\) returned a view", category=UserWarning
    )
    from torch.distributed.tensor.parallel import parallelize_module

    if kind == PlanKind.FSDP:
        mesh = init_device_mesh(device.type, (plan.dp,), mesh_dim_names=("dp",))
        for unit in fam.shard_units(model):
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return _Placed(module=model, dp_size=plan.dp, dp_rank=mesh.get_local_rank("dp"))
    tp_plan = fam.tp_plan(model)
    if tp_plan is None or plan.tp not in fam.tp_degrees(model):
        raise PlanError(f"the model has no tensor-parallel plan of degree {plan.tp}")
    mesh2 = init_device_mesh(device.type, (plan.dp, plan.tp), mesh_dim_names=("dp", "tp"))
    parallelize_module(model, mesh2["tp"], tp_plan)
    if kind == PlanKind.FSDP_TP:
        for unit in fam.shard_units(model):
            fully_shard(unit, mesh=mesh2["dp"])
        fully_shard(model, mesh=mesh2["dp"])
    return _Placed(module=model, dp_size=plan.dp, dp_rank=mesh2.get_local_rank("dp"))


def _train(
    job: Job,
    placed: _Placed,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    offset: torch.Tensor | None,
    rank: int,
    start: int,
    device: torch.device,
) -> dict[str, Any]:
    t = job.training
    local_batch = t.batch_size // placed.dp_size
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        TensorDataset(y),
        num_replicas=placed.dp_size,
        rank=placed.dp_rank,
        shuffle=True,
        seed=t.seed,
        drop_last=True,
    )
    per_epoch = len(sampler) // local_batch
    if per_epoch == 0:
        raise DataError(f"{len(y)} examples do not fill one global batch of {t.batch_size}")
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    losses = torch.full((t.steps,), math.nan, device=device)
    reports = report_steps(t.steps)
    module = placed.module
    module.train()
    started = time.perf_counter()
    _progress(job, rank, {"event": "start", "resumed_from": start, "total": t.steps})

    def order(epoch: int) -> torch.Tensor:
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    batches = step_batches(
        total=t.steps, per_epoch=per_epoch, batch=local_batch, order=order, start=start
    )
    for step, idx in enumerate(batches, start=start + 1):
        xb = x[idx].to(device, non_blocking=True)
        yb = y[idx].to(device, non_blocking=True)
        if placed.pipeline is not None:
            pipe = placed.pipeline
            with autocast:
                loss = optimizer_step(optimizer, partial(pipeline_mod.step, pipe, xb, yb))
        else:
            loss = train_step(optimizer, module, xb, yb, offset=offset, autocast=autocast)
        losses[step - 1] = loss
        if step in reports:
            mean = _global_loss(losses[step - 1 : step].clone(), placed)
            rate = (step - start) * t.batch_size / (time.perf_counter() - started)
            line = {"step": step, "total": t.steps, "loss": float(mean[0]), "samples_per_s": rate}
            _progress(job, rank, line)
        if job.checkpoint_every and step % job.checkpoint_every == 0 and step < t.steps:
            checkpoint.save(module, optimizer, step=step, directory=job.checkpoint_dir, rank=rank)
    seconds = time.perf_counter() - started
    curve = _global_loss(losses, placed).cpu()
    final = float(curve[-1])
    if not math.isfinite(final):
        raise ModelError("training diverged: the training loss is not finite")
    return {
        "steps": t.steps,
        "losses": [float(v) for v in curve],
        "final_loss": final,
        "seconds": seconds,
        "samples_per_s": (t.steps - start) * t.batch_size / max(seconds, 1e-9),
    }


def _global_loss(values: torch.Tensor, placed: _Placed) -> torch.Tensor:
    """The loss of the global batch on every rank: a pipeline's last stage holds it;
    otherwise the mean over all ranks (tensor-parallel peers hold equal values, so this is
    the mean over data-parallel groups)."""
    if placed.pipeline is not None:
        dist.broadcast(values, src=len(placed.pipeline.stages) - 1)
        return values
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / dist.get_world_size()
    return values


def _export(model: nn.Module, world_size: int) -> dict[str, torch.Tensor]:
    """The full state dict on rank 0 (``{}`` elsewhere); a collective on every rank."""
    if world_size == 1:
        return state_of(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _progress(job: Job, rank: int, line: dict[str, Any]) -> None:
    if rank != 0:
        return
    with job.progress_path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m site_node.parallel.worker JOB``: one rank from torchrun's environment."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m site_node.parallel.worker JOB_FILE", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("BATON_LOG_LEVEL", "WARNING").upper())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        run_worker(
            Path(args[0]),
            rank=int(os.environ.get("RANK", "0")),
            world_size=world,
            init_method="env://" if world > 1 else None,
        )
    except BatonError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
