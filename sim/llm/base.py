"""A small "pretrained" causal language model made here: the demo's base checkpoint.

:func:`make_base` trains a byte-level BPE tokenizer with ``tokenizers`` on generic
generated text (:mod:`sim.llm.generic`), builds a tiny Llama-config model, trains it
briefly on the same text and saves both with ``save_pretrained``, so
``AutoModelForCausalLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)``
load it offline. :func:`cached_base` keeps one per seed under a cache directory and
rebuilds it only when it is missing or its files no longer match their recorded hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from baton.io import iter_chunks
from sim.llm.generic import generic_texts

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

VERSION = 3
"""Bumped whenever what :func:`make_base` writes changes, so old cache entries are unused."""
VOCAB_SIZE = 512
"""Tokenizer vocabulary, special tokens included."""
CONTEXT = 128
"""Longest sequence the model takes (its position range)."""
EOS = "<|endoftext|>"
"""End of a text; also the padding token."""
MANIFEST = "baton-base.json"
"""The file, beside the checkpoint, that records each file's SHA-256."""
_TEXTS = 3000
_STEPS = 200
_BATCH = 16
_WINDOW = 64


def make_base(out_dir: Path, *, seed: int) -> Path:
    """Trains and saves the base model and its tokenizer in ``out_dir``; returns it.

    Deterministic given ``seed``: it trains on one thread, so the same seed writes the
    same bytes on any machine. Takes ten to twenty seconds on a CPU core.
    """
    from transformers import LlamaConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    texts = generic_texts(_TEXTS, seed=seed)
    tokenizer = _train_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same bytes on any machine, whatever its cores
    try:
        model = _pretrain(config, tokenizer, texts, seed=seed)
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _pretrain(
    config: LlamaConfig, tokenizer: PreTrainedTokenizerBase, texts: list[str], *, seed: int
) -> LlamaForCausalLM:
    """A model of ``config``, trained for a few hundred steps on windows of ``texts``."""
    from transformers import LlamaForCausalLM

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    eos = tokenizer.eos_token_id
    stream = torch.tensor([t for ids in tokenizer(texts)["input_ids"] for t in [*ids, eos]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    for _ in range(_STEPS):
        starts = torch.randint(0, len(stream) - _WINDOW, (_BATCH,), generator=generator)
        batch = torch.stack([stream[s : s + _WINDOW] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logger.info("base model trained: last loss %.3f", loss.item())
    return model


def _train_tokenizer(texts: list[str]) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
    )


def cache_root() -> Path:
    """Where cached bases live: ``$BATON_CACHE_DIR`` or ``~/.cache/baton``."""
    configured = os.environ.get("BATON_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "baton"


def cached_base(*, seed: int, cache_dir: Path | None = None) -> Path:
    """The base for ``seed``, made once and reused while its files match their hashes.

    Args:
        seed: The base's seed (:func:`make_base`).
        cache_dir: Cache root; :func:`cache_root` when None.

    Returns:
        The checkpoint directory (read it, never write into it).
    """
    target = (cache_dir or cache_root()) / "llm-base" / f"v{VERSION}-seed{seed}"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make_base(building, seed=seed)
        files = {p.name: _sha256(p) for p in sorted(building.iterdir()) if p.is_file()}
        manifest = {"version": VERSION, "seed": seed, "files": files}
        (building / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # present but stale or damaged: replaced
            shutil.rmtree(target, ignore_errors=True)
        try:
            building.rename(target)
        except OSError:  # another process finished the same base first
            if not _verified(target):
                raise
            logger.info("base for seed %d was cached by another process", seed)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _verified(path: Path) -> bool:
    """Whether ``path`` holds a base whose every recorded file has its recorded hash."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("version") != VERSION or not isinstance(files, dict) or not files:
            return False
        return all(_sha256(path / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in iter_chunks(path, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()
