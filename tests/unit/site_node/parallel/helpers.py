"""Shared pieces of the parallel-training tests: tiny models, data, jobs, a reference loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baton.ml import models_lm
from baton.ml.codec import state_of
from baton.ml.norm import fit_input_norm
from site_node.parallel import families
from site_node.parallel.job import Job, ModelSpec, TrainSpec
from site_node.parallel.launch import prepare
from site_node.parallel.plans import ParallelPlan

SGD_TOLERANCE = 1e-5
"""Largest absolute difference allowed between a parallel plan and one process, for the
losses and every weight, after a few SGD steps in float32. Measured differences are
~1e-7 (summation order of all-reduces and of split matrix products); 1e-5 leaves room for
other thread counts while still catching any wrong batch, scale or missed update (those
move weights by ~1e-2)."""

LM = ModelSpec(
    name=models_lm.FAMILY,
    args={"dim": 32, "layers": 2, "heads": 4, "hidden": 64},
    num_features=8,
    num_classes=16,
)
MLP = ModelSpec(name="mlp", args={"hidden": [16]}, num_features=8, num_classes=3)


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    """A model with its initial weights and training data."""

    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor


def case(spec: ModelSpec, *, n: int = 64, seed: int = 1) -> Case:
    """Initial weights (drawn from ``seed``) and data for ``spec``."""
    model = families.build(spec, seed=seed)
    if spec.name == models_lm.FAMILY:
        tokens = models_lm.synthetic_tokens(
            n=n, seq_len=spec.num_features, vocab=spec.num_classes, seed=seed
        )
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    else:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((n, spec.num_features), generator=gen) * 3 + 1
        y = torch.randint(0, spec.num_classes, (n,), generator=gen)
    return Case(spec=spec, weights=state_of(model), x=x, y=y)


def write_job(
    workdir: Path, c: Case, *, plan: ParallelPlan, training: TrainSpec, **kw: Any
) -> tuple[Job, Path]:
    """Writes a job for ``c`` into ``workdir``; returns it and its file."""
    job = Job(
        model=c.spec, training=training, plan=plan, workdir=str(workdir), timeout_s=60.0, **kw
    )
    return job, prepare(job, weights=c.weights, x=c.x, y=c.y)


def reference(c: Case, training: TrainSpec) -> tuple[list[float], dict[str, torch.Tensor]]:
    """One process, no Baton code in the loop: the losses and final weights to match.

    Epoch ``e`` visits ``randperm(n)`` seeded ``seed + e`` (what ``DistributedSampler``
    draws) in full global batches; the last incomplete batch is dropped.
    """
    model: nn.Module = families.build(c.spec)
    model.load_state_dict(c.weights)
    if c.spec.name != models_lm.FAMILY:
        fit_input_norm(model, c.x)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
    )
    n, batch = len(c.y), training.batch_size
    losses: list[float] = []
    epoch = 0
    while len(losses) < training.steps:
        gen = torch.Generator().manual_seed(training.seed + epoch)
        order = torch.randperm(n, generator=gen)
        for k in range(n // batch):
            idx = order[k * batch : (k + 1) * batch]
            opt.zero_grad()
            logits = model(c.x[idx])
            loss = F.cross_entropy(logits.flatten(0, -2), c.y[idx].flatten())
            torch.autograd.backward(loss)
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == training.steps:
                break
        epoch += 1
    return losses, state_of(model)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over all tensors (the key sets must be equal)."""
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
