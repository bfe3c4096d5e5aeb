"""The fine-tuned model: a pretrained base, LoRA adapters or all weights trainable, and
the strict loading of the tensors that travel between sites."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.codec import load_into, weight_norm
from baton.ml.models_lm import as_tokens

if TYPE_CHECKING:
    from baton.ml.llm.args import LMArgs

__all__ = ["HFCausalLM", "adapt", "load_trainable", "trainable_state"]

_LORA = re.compile(r"^(?:.*\.)?([^.]+)\.lora_[AB]\.")


class HFCausalLM(nn.Module):
    """A Hugging Face causal language model behind Baton's model interface: token windows
    ``[B, T]`` (integers, or floats holding integers) in, float32 logits ``[B, T, vocab]``
    out. ``lm`` is the (peft-wrapped, in ``lora`` mode) model; ``checkpoint`` the site's
    base directory it was loaded from (for the site's parallel workers to load it too)."""

    def __init__(
        self, lm: nn.Module, *, vocab: int, mode: str, checkpoint: str | None = None
    ) -> None:
        super().__init__()
        self.lm = lm
        self.vocab = vocab
        self.mode = mode
        self.checkpoint = checkpoint

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits of every position."""
        ids = as_tokens(tokens, self.vocab)
        logits: torch.Tensor = self.lm(input_ids=ids).logits
        return logits.float()


def adapt(base: nn.Module, args: LMArgs, *, seed: int) -> HFCausalLM:
    """``base`` made trainable as ``args`` ask: LoRA adapters (drawn from ``seed``, so every
    site draws the same) on the target modules with the base frozen, or every weight.

    Raises:
        ModelError: A target module is not a linear layer of the base.
    """
    vocab = int(base.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
    if args.mode == "full":
        for p in base.parameters():
            p.requires_grad_(True)
        return HFCausalLM(base, vocab=vocab, mode="full")
    from peft import LoraConfig, get_peft_model

    names = {
        name.rsplit(".", 1)[-1] for name, m in base.named_modules() if isinstance(m, nn.Linear)
    }
    missing = sorted(set(args.target_modules) - names)
    if missing:
        raise ModelError(
            f"target module {missing[0]!r} is no linear layer of the base; "
            f"its linear layers: {', '.join(sorted(names))}"
        )
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=list(args.target_modules),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 asks transformers 5 about gradient checkpointing by its deprecated name.
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        torch.manual_seed(seed)
        lm: Any = get_peft_model(base, config)
    return HFCausalLM(lm, vocab=vocab, mode="lora")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable tensors: the adapters in ``lora`` mode, every
    weight in ``full`` mode."""
    return {
        name: p.detach().to("cpu", copy=True).contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _adapters(names: set[str]) -> tuple[str, ...]:
    return tuple(sorted({m[1] for n in names if (m := _LORA.match(n))}))


def _rank(state: Mapping[str, torch.Tensor]) -> int | None:
    for name, t in state.items():
        if ".lora_A." in name and t.ndim == 2:
            return int(t.shape[0])
    return None


def _key_mismatch(expected: set[str], got: set[str]) -> str:
    mine, theirs = _adapters(expected), _adapters(got)
    if mine != theirs:
        return (
            f"the weights adapt modules {', '.join(theirs) or 'none'}, but the plan's model "
            f"adapts {', '.join(mine) or 'none'}"
        )
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing:
        return f"tensor {missing[0]!r} is missing from the weights"
    return f"tensor {unexpected[0]!r} is not part of the model"


def load_trainable(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, max_norm: float | None
) -> None:
    """Copies tensors of :func:`trainable_state` into ``model``, strictly.

    Constraints: the key set MUST equal the model's trainable tensors; each tensor MUST
    have its shape and dtype and finite values; with ``max_norm`` the L2 norm of all
    values together MUST NOT exceed it. Nothing is copied unless all pass.

    Raises:
        ModelError: Naming what differs: the adapted modules, the adapters' rank, or the
            first offending tensor.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != set(params):
        raise ModelError(_key_mismatch(set(params), set(state)))
    mine, theirs = _rank(dict(params)), _rank(state)
    if mine != theirs:
        raise ModelError(f"the adapters have rank {theirs}, but the plan's model has rank {mine}")
    if max_norm is not None:
        norm = weight_norm(state)
        if norm > max_norm:
            raise ModelError(
                f"weights have L2 norm {norm:.4g}, above the plan's bound {max_norm:.4g}"
            )
    # The frozen tensors load onto themselves; the codec checks every tensor's shape,
    # dtype and values and copies nothing unless all pass.
    load_into(model, {**model.state_dict(), **state})
