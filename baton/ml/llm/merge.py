"""A run's result (base pin + adapters) folded into a full checkpoint plain ``transformers``
loads."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from baton.errors import ConfigError, ModelError
from baton.ml.codec import load_metadata_file, load_state_file
from baton.ml.llm.args import FAMILY, lm_args
from baton.ml.llm.base import base_hash, load_base
from baton.ml.llm.model import adapt, load_trainable
from baton.ml.portable import ResultMetadata

__all__ = ["merge"]

logger = logging.getLogger(__name__)


def merge(result_file: Path, base_dir: Path, out_dir: Path) -> str:
    """Writes the base with the result's weights applied to ``out_dir``, in the
    ``save_pretrained`` layout (model and tokenizer); returns the base's hash.

    The result's metadata names the model (``hf_causal_lm``) and its arguments, the base
    pin among them; the base must hash to that pin. Adapters (``lora``) are merged into
    the base's weights (peft ``merge_and_unload``); a ``full`` result's weights replace
    them. The merge runs in float32, whatever the base's dtype during training. The
    checkpoint is written to a temporary directory beside ``out_dir``, then renamed.

    Raises:
        ModelError: The result file is unreadable, is no ``hf_causal_lm`` result, or its
            tensors do not fit the base (other modules, rank or shapes).
        ConfigError: The base's hash is not the result's pin (both named), or ``out_dir``
            exists already.
        DataError: The base directory is missing or unreadable.
    """
    meta = ResultMetadata.parse(load_metadata_file(result_file), source=str(result_file))
    if meta.model != FAMILY:
        raise ModelError(f"{result_file}: holds a {meta.model!r} model, not {FAMILY!r}")
    try:
        args = lm_args(meta.model_args)
    except ModelError as exc:
        raise ModelError(f"{result_file}: {exc.message}") from None
    actual = base_hash(base_dir)
    if actual != args.base_sha256:
        raise ConfigError(
            f"{base_dir}: the base checkpoint has hash {actual}, but {result_file} was "
            f"trained on {args.base_sha256}"
        )
    if out_dir.exists():
        raise ConfigError(f"{out_dir}: already exists; name a new directory")
    state = load_state_file(result_file)
    base, tokenizer = load_base(base_dir, dtype=torch.float32)
    model = adapt(base, args, seed=0)  # the draw is overwritten by the result's tensors
    try:
        load_trainable(model, state, max_norm=None)
    except ModelError as exc:
        raise ModelError(f"{result_file}: {exc.message}") from None
    lm: Any = model.lm
    merged = lm.merge_and_unload() if args.mode == "lora" else lm
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("merged %s onto base %s into %s", result_file, actual, out_dir)
    return actual
