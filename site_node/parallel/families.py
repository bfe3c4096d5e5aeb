"""What parallel training needs to know per model family: building, TP plans, pipeline stages,
FSDP units, size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from baton.errors import PlanError
from baton.ml import models_lm
from baton.ml.models import MLP, InputNorm, build_model
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


def _even_split(units: int, parts: int) -> list[range]:
    """``range(units)`` cut into ``parts`` consecutive runs whose lengths differ by one at
    most (the earlier runs take the extra units)."""
    size, extra = divmod(units, parts)
    runs, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        runs.append(range(start, stop))
        start = stop
    return runs


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


class LMStage(nn.Module):
    """Consecutive blocks of a :class:`models_lm.CausalLM`; the first stage also embeds the
    tokens, the last also applies the final norm and the vocabulary head.

    Holds the model's own submodules under their names in the model (``tok_emb``,
    ``layers.3``, ``head``), so its state dict uses the model's keys.
    """

    def __init__(self, model: models_lm.CausalLM, blocks: range) -> None:
        super().__init__()
        first, last = blocks.start == 0, blocks.stop == len(model.layers)
        self.tok_emb: nn.Embedding | None = model.tok_emb if first else None
        self.pos_emb: nn.Embedding | None = model.pos_emb if first else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in blocks})
        self.norm: nn.LayerNorm | None = model.norm if last else None
        self.head: nn.Linear | None = model.head if last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, T]`` (first stage) or hidden states ``[B, T, dim]`` in; hidden
        states or, from the last stage, logits ``[B, T, vocab]`` out."""
        if self.tok_emb is not None and self.pos_emb is not None:
            positions = torch.arange(x.shape[1], device=x.device)
            x = self.tok_emb(x) + self.pos_emb(positions)
        for layer in self.layers.values():
            x = layer(x)
        if self.norm is not None and self.head is not None:
            x = self.head(self.norm(x))
        return x


def pp_degrees(model: nn.Module) -> tuple[int, ...]:
    """Numbers of pipeline stages the model can be cut into (empty without a pipeline plan):
    at least one linear layer (MLP) or one block (causal LM) per stage."""
    if isinstance(model, models_lm.CausalLM):
        units = len(model.layers)
    elif isinstance(model, MLP):
        units = len(_mlp_linears(model))
    else:
        return ()
    return tuple(range(2, units + 1))


def pp_stages(model: nn.Module, pp: int) -> list[nn.Module]:
    """The model cut into ``pp`` pipeline stages, in order; stage ``i`` runs on rank ``i``.

    MLP: its body's ``Linear -> ReLU (-> Dropout)`` groups split evenly, the input
    normalization with the first. Causal LM: its blocks split evenly, the embeddings with
    the first and the final norm and head with the last. The stages share the model's
    submodules and their state dicts together hold every key of the model's, once.

    Raises:
        PlanError: The family has no pipeline plan, or not ``pp`` stages.
    """
    if pp not in pp_degrees(model):
        raise PlanError(f"the model has no pipeline plan of {pp} stages")
    if isinstance(model, models_lm.CausalLM):
        return [LMStage(model, run) for run in _even_split(len(model.layers), pp)]
    assert isinstance(model, MLP)
    starts = [i for i, m in enumerate(model.body) if isinstance(m, nn.Linear)]
    cuts = [starts[run.start] for run in _even_split(len(starts), pp)] + [len(model.body)]
    return [MLPStage(model, cuts[i], cuts[i + 1]) for i in range(pp)]


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
        seq_len = example_shape[0] if example_shape else model.pos_emb.num_embeddings
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
        pp_degrees=pp_degrees(model),
    )
