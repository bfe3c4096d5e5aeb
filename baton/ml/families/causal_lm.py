"""The causal language model family (:mod:`baton.ml.models_lm`) and its parallel plans.

Tensor parallelism splits ``q``, ``k``, ``v`` and ``w1`` of every block by output columns
and ``wo`` and ``w2`` by input rows (Megatron style: one all-reduce per attention and per
MLP); each worker then runs its local heads only. FSDP shards block by block; a pipeline
cuts between blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from baton.ml.families.base import ALL_PLANS, Family, even_split
from baton.ml.models_lm import ARGS, FAMILY, CausalLM, build_causal_lm
from baton.ml.plans import PlanKind

if TYPE_CHECKING:
    from torch.distributed.tensor.parallel import ParallelStyle


class LMStage(nn.Module):
    """Consecutive blocks of a :class:`CausalLM`; the first stage also embeds the tokens,
    the last also applies the final norm and the vocabulary head.

    Holds the model's own submodules under their names in the model (``tok_emb``,
    ``layers.3``, ``head``), so its state dict uses the model's keys.
    """

    def __init__(self, model: CausalLM, blocks: range) -> None:
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


class CausalLMFamily(Family):
    """``causal_lm``: arguments ``dim``, ``layers``, ``heads`` and ``hidden``
    (:func:`baton.ml.models_lm.build_causal_lm`); a sequence model."""

    name: ClassVar[str] = FAMILY
    args: ClassVar[tuple[str, ...]] = ARGS
    model_type: ClassVar[type[nn.Module]] = CausalLM
    plans: ClassVar[frozenset[PlanKind]] = ALL_PLANS
    sequence: ClassVar[bool] = True

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Builds a :class:`CausalLM` of context ``num_features`` and vocabulary
        ``num_classes``."""
        return build_causal_lm(args, num_features, num_classes)

    def _lm(self, model: nn.Module) -> CausalLM:
        lm = self.own(model)
        assert isinstance(lm, CausalLM)
        return lm

    def tp_plan(self, model: nn.Module) -> dict[str, ParallelStyle] | None:
        """The plan of every block; embeddings, norms and the head stay replicated (every
        worker of a tensor-parallel group holds them whole and computes the same gradient)."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        plan: dict[str, ParallelStyle] = {}
        for i in range(len(self._lm(model).layers)):
            for name in ("attn.q", "attn.k", "attn.v", "ff.w1"):
                plan[f"layers.{i}.{name}"] = ColwiseParallel()
            for name in ("attn.wo", "ff.w2"):
                plan[f"layers.{i}.{name}"] = RowwiseParallel()
        return plan

    def tp_degrees(self, model: nn.Module, limit: int = 64) -> tuple[int, ...]:
        """Degrees dividing both the heads and the MLP width."""
        lm = self._lm(model)
        return tuple(d for d in range(2, limit + 1) if lm.heads % d == 0 and lm.hidden % d == 0)

    def pp_units(self, model: nn.Module) -> int:
        """Its blocks."""
        return len(self._lm(model).layers)

    def cut(self, model: nn.Module, pp: int) -> list[nn.Module]:
        """The blocks split evenly, the embeddings with the first stage and the final norm
        and head with the last."""
        lm = self._lm(model)
        return [LMStage(lm, run) for run in even_split(len(lm.layers), pp)]

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """Every block."""
        return list(self._lm(model).layers)

    def activation_bytes(
        self, model: nn.Module, *, batch: int, example_shape: tuple[int, ...]
    ) -> int:
        """Attention and MLP activations of every block, and the logits (float32)."""
        lm = self._lm(model)
        seq_len = example_shape[0] if example_shape else lm.pos_emb.num_embeddings
        dim = lm.norm.normalized_shape[0]
        vocab = lm.head.out_features
        per_layer = batch * seq_len * (10 * dim + 2 * lm.hidden) + batch * lm.heads * seq_len**2
        return 4 * (len(lm.layers) * per_layer + batch * seq_len * vocab)
