"""The ``[model] args`` of an ``hf_causal_lm`` plan, checked without torch or a checkpoint."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from baton.errors import ModelError

__all__ = ["ARGS", "FAMILY", "MODES", "LMArgs", "arg_problem", "lm_args"]

FAMILY = "hf_causal_lm"
"""The registry name of the family (a plan's ``model.name``)."""
ARGS = ("base_sha256", "mode", "rank", "alpha", "dropout", "target_modules", "base_dtype")
"""The arguments a plan may give, in this order."""
MODES = ("lora", "full")
"""``lora``: low-rank adapters train and travel, the base stays frozen; ``full``: every
weight trains and travels."""
DTYPES = ("float32", "bfloat16")
"""What the base's weights are held in; ``bfloat16`` only for a frozen base (``lora``)."""
_PIN = re.compile(r"^sha256:[0-9a-f]{64}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class LMArgs:
    """The checked arguments of an ``hf_causal_lm`` model."""

    base_sha256: str
    """The pin of the base checkpoint: ``sha256:`` and 64 hex digits
    (:func:`baton.ml.llm.base.base_hash` of the directory every site holds)."""
    mode: str = "lora"
    """One of :data:`MODES`."""
    rank: int = 8
    """LoRA rank ``r``."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by ``alpha / rank``)."""
    dropout: float = 0.0
    """Dropout on the adapters' input, in ``[0, 1)``."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Names of the linear layers that get adapters (module name suffixes, as peft matches)."""
    base_dtype: str = "float32"
    """One of :data:`DTYPES`."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def arg_problem(args: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first argument that is unknown, missing or invalid and why, or None if all pass.

    Returns:
        ``(key, reason)``; ``key`` is the argument's name.
    """
    for key in args:
        if key not in ARGS:
            return key, f"unknown argument {key!r} for model {FAMILY!r}; known: {', '.join(ARGS)}"
    pin = args.get("base_sha256")
    if not isinstance(pin, str) or not _PIN.match(pin):
        return "base_sha256", (
            "model argument 'base_sha256' must be 'sha256:' and 64 lower-case hex digits "
            "(`baton base-hash DIR` prints it)"
        )
    mode = args.get("mode", "lora")
    if mode not in MODES:
        return "mode", f"model argument 'mode' must be one of {', '.join(MODES)}"
    rank = args.get("rank", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 4096:
        return "rank", "model argument 'rank' must be an integer in [1, 4096]"
    alpha = args.get("alpha", 16)
    if isinstance(alpha, bool) or not isinstance(alpha, int) or not 1 <= alpha <= 65536:
        return "alpha", "model argument 'alpha' must be an integer in [1, 65536]"
    dropout = args.get("dropout", 0.0)
    if not _number(dropout) or not 0.0 <= dropout < 1.0:
        return "dropout", "model argument 'dropout' must be a number in [0, 1)"
    targets = args.get("target_modules", ["q_proj", "v_proj"])
    if (
        not isinstance(targets, list | tuple)
        or not targets
        or not all(isinstance(t, str) and _MODULE.match(t) for t in targets)
        or len(set(targets)) != len(targets)
    ):
        return "target_modules", (
            "model argument 'target_modules' must be a non-empty list of distinct module names"
        )
    dtype = args.get("base_dtype", "float32")
    if dtype not in DTYPES:
        return "base_dtype", f"model argument 'base_dtype' must be one of {', '.join(DTYPES)}"
    if dtype != "float32" and mode != "lora":
        return "base_dtype", (
            f"model argument 'base_dtype' {dtype!r} holds a frozen base: only with mode 'lora'"
        )
    return None


def lm_args(args: Mapping[str, Any]) -> LMArgs:
    """The checked arguments, defaults filled in.

    Raises:
        ModelError: An argument is unknown, missing (``base_sha256``) or invalid.
    """
    problem = arg_problem(args)
    if problem is not None:
        raise ModelError(problem[1])
    return LMArgs(
        base_sha256=args["base_sha256"],
        mode=args.get("mode", "lora"),
        rank=args.get("rank", 8),
        alpha=args.get("alpha", 16),
        dropout=float(args.get("dropout", 0.0)),
        target_modules=tuple(sorted(args.get("target_modules", ["q_proj", "v_proj"]))),
        base_dtype=args.get("base_dtype", "float32"),
    )
