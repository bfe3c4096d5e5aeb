"""What parallel training needs to know per model family: building, TP plans, FSDP units, size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from baton import models_lm
from baton.models import MLP, build_model
from site_node.parallel.plans import ModelFootprint

if TYPE_CHECKING:
    from torch.distributed.tensor.parallel import ParallelStyle

    from site_node.parallel.job import ModelSpec


def build(spec: ModelSpec, *, seed: int = 0) -> nn.Module:
    """Builds the model of ``spec`` (its weights are replaced by the job's weights later).

    Raises:
        ModelError: Unknown model or arguments.
    """
    if spec.name == models_lm.FAMILY:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return models_lm.build_causal_lm(spec.args, spec.num_features, spec.num_classes)
    return build_model(
        spec.name,
        spec.args,
        num_features=spec.num_features,
        num_classes=spec.num_classes,
        seed=seed,
    )


def _mlp_linears(model: MLP) -> list[tuple[str, nn.Linear]]:
    return [(f"body.{n}", m) for n, m in model.body.named_children() if isinstance(m, nn.Linear)]


def tp_plan(model: nn.Module) -> dict[str, ParallelStyle] | None:
    """The model family's tensor-parallel plan, or None if it has none.

    MLP: consecutive pairs of linear layers, the first split by columns and the second by
    rows (the activation between them is element-wise); an odd last layer stays whole.
    """
    if isinstance(model, models_lm.CausalLM):
        return models_lm.tp_plan(model)
    if isinstance(model, MLP):
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        linears = _mlp_linears(model)
        plan: dict[str, ParallelStyle] = {}
        for i in range(0, len(linears) - 1, 2):
            plan[linears[i][0]] = ColwiseParallel()
            plan[linears[i + 1][0]] = RowwiseParallel()
        return plan or None
    return None


def tp_degrees(model: nn.Module, limit: int = 64) -> tuple[int, ...]:
    """Tensor-parallel degrees the model supports (empty without a plan)."""
    if isinstance(model, models_lm.CausalLM):
        return models_lm.tp_degrees(model, limit)
    if isinstance(model, MLP):
        linears = _mlp_linears(model)
        split = [linears[i][1].out_features for i in range(0, len(linears) - 1, 2)]
        if not split:
            return ()
        return tuple(d for d in range(2, limit + 1) if all(w % d == 0 for w in split))
    return ()


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Submodules FSDP2 shards on their own (gathered one at a time); the root comes last."""
    if isinstance(model, models_lm.CausalLM):
        return list(model.layers)
    return []


def footprint(
    model: nn.Module, *, optimizer: str, batch: int, example_shape: tuple[int, ...]
) -> ModelFootprint:
    """A rough estimate of what training ``model`` on global batches of ``batch`` needs."""
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if isinstance(model, models_lm.CausalLM):
        seq_len = example_shape[0] if example_shape else 1
        activations = models_lm.activation_bytes(model, batch=batch, seq_len=seq_len)
    else:
        widths = [p.shape[0] for p in model.parameters() if p.ndim == 2]
        activations = 4 * batch * 2 * sum(widths)
    units = shard_units(model)
    unit_params = max((sum(p.numel() for p in u.parameters()) for u in units), default=0)
    return ModelFootprint(
        num_params=num_params,
        global_batch=batch,
        unit_bytes=4 * unit_params,
        optimizer=optimizer,
        activation_bytes=activations,
        tp_degrees=tp_degrees(model),
    )
