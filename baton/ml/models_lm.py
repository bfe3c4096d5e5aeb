"""A small causal language model (decoder-only transformer), its token data and targets.

The model maps token ids ``[B, T]`` to next-token logits ``[B, T, vocab]``. Attention
reshapes with ``.view(B, T, -1, head_dim)``, so under tensor parallelism each worker runs
its local heads only; the family's parallel plans are in :mod:`baton.ml.families.causal_lm`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baton.errors import DataError, ModelError

FAMILY = "causal_lm"
"""The registry name of this family."""

ARGS = ("dim", "layers", "heads", "hidden")
"""The arguments of :func:`build_causal_lm`."""


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attends over ``x`` ``[B, T, dim]`` with a causal mask."""
        b, t, _ = x.shape
        # -1: the number of heads this worker holds (all of them without tensor parallelism).
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        result: torch.Tensor = self.wo(out.transpose(1, 2).reshape(b, t, -1))
        return result


class FeedForward(nn.Module):
    """``w2(gelu(w1(x)))``."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the MLP position-wise."""
        out: torch.Tensor = self.w2(F.gelu(self.w1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: attention and MLP, each with a residual."""

    def __init__(self, *, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim=dim, hidden=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the block's output, same shape as ``x``."""
        x = x + self.attn(self.attn_norm(x))
        out: torch.Tensor = x + self.ff(self.ff_norm(x))
        return out


class CausalLM(nn.Module):
    """Token and position embeddings, transformer blocks, final norm and a vocabulary head."""

    def __init__(
        self, *, vocab: int, max_len: int, dim: int, layers: int, heads: int, hidden: int
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ModelError(f"model width {dim} does not divide into {heads} heads")
        self.heads = heads
        self.hidden = hidden
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.layers = nn.ModuleList(
            Block(dim=dim, heads=heads, hidden=hidden) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Returns next-token logits ``[B, T, vocab]`` for token ids ``[B, T]`` (integers,
        or floats holding integers, as a site's feature columns do)."""
        if tokens.is_floating_point():
            # A site's feature columns; integer ids come from code that checked them.
            tokens = as_tokens(tokens, self.tok_emb.num_embeddings)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        for layer in self.layers:
            x = layer(x)
        out: torch.Tensor = self.head(self.norm(x))
        return out


def _positive(args: Mapping[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
        raise ModelError(f"model argument {name!r} must be an integer in [1, 65536]")
    return value


def build_causal_lm(args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    """Builds a :class:`CausalLM` (a registry builder: draw the weights under a seed).

    Args:
        args: ``dim`` (default 32), ``layers`` (2), ``heads`` (4), ``hidden`` (4 * dim).
        num_features: The longest sequence (context length).
        num_classes: The vocabulary size.

    Raises:
        ModelError: An unknown or invalid argument.
    """
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise ModelError(f"unknown argument {unknown[0]!r} for model {FAMILY!r}")
    dim = _positive(args, "dim", 32)
    return CausalLM(
        vocab=num_classes,
        max_len=num_features,
        dim=dim,
        layers=_positive(args, "layers", 2),
        heads=_positive(args, "heads", 4),
        hidden=_positive(args, "hidden", 4 * dim),
    )


def as_tokens(x: torch.Tensor, vocab: int) -> torch.Tensor:
    """Token ids ``x`` (integers, or floats holding integers) as int64.

    Raises:
        DataError: A value is not an integer in ``[0, vocab)``.
    """
    valid = (x >= 0) & (x < vocab)
    if x.is_floating_point():
        valid &= x == x.round()
    if not bool(valid.all()):
        raise DataError(
            f"a language model reads token ids, integers in [0, {vocab}); these "
            "features are not (is the dataset a token task?)"
        )
    return x.long()


def sequence_targets(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The next token at every position ``[B, T]`` of windows ``x`` ``[B, T]`` whose next
    token is ``y`` ``[B]``: ``x`` shifted left by one, then ``y``."""
    return torch.cat([x[:, 1:].long(), y.long()[:, None]], dim=1)


def synthetic_tokens(*, n: int, seq_len: int, vocab: int, seed: int) -> torch.Tensor:
    """Token sequences ``[n, seq_len + 1]`` (int64) with learnable structure, for tests.

    Each sequence follows ``x[t+1] = (x[t] * 3 + step) mod vocab`` from a random start and
    a random per-sequence ``step``, with one token in ten replaced by noise. Inputs are
    ``tokens[:, :-1]``, targets ``tokens[:, 1:]``.
    """
    if n < 1 or seq_len < 1 or vocab < 2:
        raise ValueError("synthetic tokens need n >= 1, seq_len >= 1 and vocab >= 2")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.empty((n, seq_len + 1), dtype=torch.int64)
    tokens[:, 0] = torch.randint(0, vocab, (n,), generator=gen)
    step = torch.randint(1, max(2, math.isqrt(vocab)), (n,), generator=gen)
    for t in range(seq_len):
        tokens[:, t + 1] = (tokens[:, t] * 3 + step) % vocab
    noise = torch.rand((n, seq_len + 1), generator=gen) < 0.1
    tokens[noise] = torch.randint(0, vocab, (int(noise.sum()),), generator=gen)
    return tokens
