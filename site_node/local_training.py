"""A hop's training with several local workers: the site's parallel plan, applied to the
travelling model through ``site_node.parallel``.

The daemon writes the verified, decrypted weights and the site's training split into a
private job directory, starts the workers (``torchrun`` or forked), forwards rank 0's
progress, and loads the full trained state back into the model it evaluates and seals. The
job directory holds plaintext and is removed whatever happens.

Only plain SGD or Adam, without the proximal penalty, can be spread: the other training
settings of the run plan map one to one onto the workers' job (the learning rate of
:func:`~baton.ml.trainer.hop_lr`, the steps of :func:`~baton.ml.trainer.total_steps`,
logit adjustment). The workers drop incomplete batches and draw their own example order,
so a parallel hop is not bit-for-bit the in-process hop.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baton.errors import DataError, PlanError, TrainingInterrupted, WorkerError
from baton.ml.codec import load_into, load_state_file, state_of
from baton.ml.data import Split
from baton.ml.families import families_for, family
from baton.ml.families.hf_causal_lm import HFCausalLMFamily
from baton.ml.llm.model import HFCausalLM
from baton.ml.models import is_sequence_model
from baton.ml.models_lm import as_tokens, sequence_targets
from baton.ml.trainer import TrainResult, hop_lr, total_steps
from baton.plan import RunPlan
from site_node.config import SiteTraining
from site_node.parallel import families
from site_node.parallel.job import Job, ModelSpec, TrainSpec
from site_node.parallel.launch import Starter, launch, prepare, read_result
from site_node.parallel.nodes import NodeGroup, announce, withdraw
from site_node.parallel.plans import ParallelPlan, PlanKind, choose_plan

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float, dict[str, float]], None]
"""``progress(step, total_steps, loss, extra)``: rank 0's progress; ``extra`` holds
``samples_per_s``."""


def site_device(settings: SiteTraining) -> str:
    """``cuda`` or ``cpu``: where this site's workers train (``[training] device``).

    Raises:
        PlanError: The site asks for CUDA, or for more GPU workers than there are GPUs.
    """
    available = torch.cuda.is_available()
    if settings.device == "cpu" or (settings.device == "auto" and not available):
        return "cpu"
    if not available:
        raise PlanError("the site config asks for device cuda, but torch sees no CUDA device")
    gpus = torch.cuda.device_count()
    if settings.workers > gpus:
        raise PlanError(
            f"the site config asks for {settings.workers} GPU workers per machine, "
            f"but this machine has {gpus} GPU(s)"
        )
    return "cuda"


def site_plan(
    settings: SiteTraining,
    model: nn.Module,
    run_plan: RunPlan,
    *,
    num_examples: int,
    device: str = "cpu",
) -> ParallelPlan:
    """The parallel plan of this site's hop for ``model``: the run plan's
    ``[training] parallel_plan`` unless it is ``site``, else the site's own setting.

    Raises:
        PlanError: The requested plan cannot run this model on ``settings.workers``
            workers, or the model family cannot be spread at all.
    """
    workers = settings.total_workers
    free = _cuda_free_bytes() if device == "cuda" else _memory_bytes()
    requested = run_plan.training.parallel_plan
    kind = settings.parallel_plan if requested == "site" else requested
    if kind == "single":
        return ParallelPlan(kind=PlanKind.SINGLE)
    if kind != "auto" and workers < 2:
        raise PlanError(
            f"the run plan asks for plan {kind}, but this site trains with 1 worker "
            "(set [training] workers in its site config)"
        )
    footprint = families.footprint(
        model,
        optimizer=_job_optimizer(run_plan),
        batch=run_plan.training.batch_size,
        example_shape=(),
    )
    if kind == "auto":
        plan = choose_plan(devices=workers, free_bytes=free, model=footprint)
    else:
        plan = choose_plan(
            devices=workers,
            free_bytes=free,
            model=footprint,
            override=_override(PlanKind(kind), workers, footprint.tp_degrees),
        )
    name = run_plan.model.name
    fam = family(name)
    if plan.kind not in fam.plans:
        supported = ", ".join(families_for(plan.kind))
        raise PlanError(f"plan {plan.kind} cannot train model {name!r}; it trains: {supported}")
    if isinstance(fam, HFCausalLMFamily):
        fam.check_plan(model, plan.kind)
    if plan.kind != PlanKind.SINGLE and num_examples < run_plan.training.batch_size:
        raise PlanError(
            f"{num_examples} training examples do not fill one global batch of "
            f"{run_plan.training.batch_size}"
        )
    return plan


def _override(kind: PlanKind, workers: int, tp_degrees: tuple[int, ...]) -> ParallelPlan:
    if kind in (PlanKind.DDP, PlanKind.FSDP):
        return ParallelPlan(kind=kind, dp=workers)
    if kind == PlanKind.TP:
        return ParallelPlan(kind=kind, tp=workers)
    if kind == PlanKind.PP:
        return ParallelPlan(kind=kind, pp=workers)
    for tp in sorted(tp_degrees):
        if workers % tp == 0 and workers // tp >= 2:
            return ParallelPlan(kind=kind, dp=workers // tp, tp=tp)
    raise PlanError(
        f"plan fsdp_tp cannot split {workers} workers into data-parallel groups of a "
        f"tensor-parallel degree the model supports ({', '.join(map(str, tp_degrees)) or 'none'})"
    )


def _job_optimizer(run_plan: RunPlan) -> str:
    """The workers' optimizer for the run plan's (:func:`baton.ml.step.make_optimizer`)."""
    t = run_plan.training
    if t.proximal_mu > 0:
        raise PlanError("parallel training does not implement the proximal penalty")
    if t.optimizer == "sgd":
        return "sgd"
    # Adam and AdamW are the same algorithm without weight decay.
    if t.weight_decay != 0:
        raise PlanError("parallel training runs Adam only without weight decay")
    return "adamw"


def train_parallel(
    model: nn.Module,
    split: Split,
    run_plan: RunPlan,
    plan: ParallelPlan,
    *,
    launcher: str,
    job_dir: Path,
    seed: int,
    hop_index: int,
    num_sites: int,
    progress: ProgressFn | None = None,
    checkpoint_every: int = 0,
    restarts: int = 0,
    should_stop: Callable[[], bool] | None = None,
    nodes: NodeGroup | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Trains ``model`` in place under ``plan`` with worker processes.

    The job directory is removed when the hop's training ends, trained or failed for
    good. An interrupted hop (the daemon stopped or killed) leaves it, checkpoints
    included, so the same hop started again resumes from its newest checkpoint.

    Args:
        model: The travelling model, already checked; replaced by the trained state.
        split: The site's training split.
        run_plan: The signed run plan (its training policy).
        plan: This site's parallel plan, from :func:`site_plan`.
        launcher: ``torchrun`` or ``fork``.
        job_dir: Private directory for the job (see above).
        seed: This hop's seed.
        hop_index: This hop's 0-based index across the run.
        num_sites: Sites per cycle.
        progress: Receives rank 0's progress.
        checkpoint_every: Steps between the workers' checkpoints; 0: none.
        restarts: Times the workers are started again, from the newest checkpoint, after
            they crashed.
        should_stop: Asked while the workers run; True stops them (the site is stopping).
        nodes: The site's machines, when the workers span several; ``job_dir`` must then
            lie in their shared directory.
        device: ``cpu`` (gloo) or ``cuda`` (NCCL, bf16 autocast), from :func:`site_device`.

    Raises:
        DataError: The split is empty or has labels the model cannot output.
        PlanError: The global batch does not divide among the workers.
        WorkerError: A worker failed; nothing of its output is kept.
        ModelError: The workers' result does not fit the model.
        TrainingInterrupted: ``should_stop`` said so; the job directory stays.
    """
    if len(split) == 0:
        raise DataError("the split holds no examples")
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    num_classes = _num_outputs(model, x)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(f"labels fall outside the model's {num_classes} classes")
    if is_sequence_model(model):
        # The workers train a language model on token ids and every position's next token.
        x, y = as_tokens(x, num_classes), sequence_targets(x, y)
    t = run_plan.training
    try:
        job = Job(
            model=ModelSpec(
                name=run_plan.model.name,
                args=dict(run_plan.model.args),
                num_features=x.shape[1],
                num_classes=num_classes,
                checkpoint=(model.checkpoint or "") if isinstance(model, HFCausalLM) else "",
            ),
            training=TrainSpec(
                optimizer=_job_optimizer(run_plan),
                lr=hop_lr(t, hop_index, num_sites),
                momentum=t.momentum if t.optimizer == "sgd" else 0.0,
                weight_decay=t.weight_decay,
                batch_size=t.batch_size,
                steps=total_steps(len(y), t),
                seed=seed,
                logit_adjustment=t.logit_adjustment,
            ),
            plan=plan,
            workdir=str(job_dir),
            checkpoint_every=checkpoint_every,
            device=device,
        )
    except ValueError as exc:
        raise PlanError(f"plan {plan.kind} on {plan.world_size} workers: {exc}") from None

    def forward(line: dict[str, Any]) -> None:
        if progress is not None and "step" in line:
            extra = {"samples_per_s": float(line.get("samples_per_s", 0.0))}
            progress(int(line["step"]), int(line["total"]), float(line["loss"]), extra)

    started = time.perf_counter()
    starter: Starter = "fork" if launcher == "fork" else "torchrun"
    try:
        job_path = prepare(job, weights=state_of(model), x=x, y=y)
        logger.info(
            "training hop %d with plan %s on %d workers (%s)",
            hop_index,
            plan.kind,
            plan.world_size,
            launcher,
        )
        for attempt in itertools.count():
            try:
                output = _launch(job_path, plan, starter, forward, should_stop, nodes)
                break
            except WorkerError as exc:
                if not exc.retryable or attempt >= restarts:
                    raise
                logger.warning(
                    "hop %d: %s; starting the workers again (%d of %d)",
                    hop_index,
                    exc.message,
                    attempt + 1,
                    restarts,
                )
        trained = load_state_file(output)
        done = read_result(job)
    except TrainingInterrupted:
        raise
    except Exception:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    # Not when interrupted: the site stopping mid-hop keeps the checkpoints for the hop's
    # next delivery.
    shutil.rmtree(job_dir, ignore_errors=True)
    load_into(model, trained)
    seconds = time.perf_counter() - started
    resumed = int(done.get("resumed_from", 0))
    logger.info(
        "hop %d: %d steps on %d workers, %.1f samples/s%s",
        hop_index,
        done["steps"],
        plan.world_size,
        done["samples_per_s"],
        f", resumed at step {resumed}" if resumed else "",
    )
    return TrainResult(
        num_examples=len(y),
        steps=int(done["steps"]),
        train_seconds=seconds,
        final_loss=float(done["final_loss"]),
        resumed_from_step=resumed,
    )


def _launch(
    job_path: Path,
    plan: ParallelPlan,
    starter: Starter,
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool] | None,
    nodes: NodeGroup | None,
) -> Path:
    if nodes is None:
        return launch(job_path, starter=starter, progress=progress, should_stop=should_stop)
    rendezvous = nodes.rendezvous()
    announce(nodes.shared_dir, job_path, rendezvous, nproc=plan.world_size // nodes.nodes)
    try:
        return launch(
            job_path,
            starter="torchrun",
            progress=progress,
            should_stop=should_stop,
            rendezvous=rendezvous,
            local_addr=nodes.local_addr,
        )
    finally:
        withdraw(nodes.shared_dir, rendezvous.id)


def remove_stale_jobs(root: Path, *, older_than_s: float, now: float | None = None) -> list[Path]:
    """Removes the job directories under ``root`` (``<run>/hop-NNNNN.job``) in which
    nothing changed for ``older_than_s`` seconds: hops interrupted and never delivered
    again (their run ended meanwhile), whose plaintext weights and checkpoints would
    otherwise stay on disk for good.

    Returns:
        The directories removed.
    """
    current = time.time() if now is None else now
    removed = []
    for job in sorted(root.glob("*/hop-*.job")):
        try:
            newest = max(p.stat().st_mtime for p in (job, *job.rglob("*")))
        except (FileNotFoundError, ValueError):
            continue
        if newest < current - older_than_s:
            shutil.rmtree(job, ignore_errors=True)
            removed.append(job)
            logger.warning(
                "removed %s: an interrupted hop's job, unchanged for %.0f hours",
                job,
                (current - newest) / 3600,
            )
    return removed


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(model(x[:1]).shape[-1])
    finally:
        model.train(was_training)


def _cuda_free_bytes() -> int:
    free, _ = torch.cuda.mem_get_info(0)
    return int(free)


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return 0
