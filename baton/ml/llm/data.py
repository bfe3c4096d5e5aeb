"""A department's text on disk, tokenized by the base's tokenizer into windows of tokens.

A site directory of task ``causal_lm_finetune`` holds::

    schema.json    {"task": "causal_lm_finetune", "context": 64}      ("base" optional)
    train.jsonl    one {"text": "..."} object per line (documents)
    val.jsonl
    base/          the pretrained checkpoint (a directory or a link to one)

or ``train.txt`` and ``val.txt`` instead of the JSONL files: documents separated by one
or more blank lines. ``context`` is the window length in tokens (2 to 8192); ``base``, a
path relative to the site directory, names the checkpoint where it is not ``base/``.

Each split's documents are tokenized (no special tokens), each followed by the
tokenizer's end-of-sequence token where it has one, and concatenated; the token stream is
cut into consecutive windows of ``context`` tokens: ``x`` is a window, ``y`` the token
after it (the next window's first). Token ids are stored as float32 (exact below 2**24),
as every :class:`~baton.ml.data.Split` holds its features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE, Schema, SiteData, Split, _read_text, class_digest
from baton.ml.llm.base import BASE_DIR, load_tokenizer

__all__ = ["MAX_CONTEXT", "TASK", "base_dir", "read_lm_site", "site_schema"]

TASK = "causal_lm_finetune"
"""The task's name."""
MAX_CONTEXT = 8192
"""The longest window a schema may ask for."""
_FORMATS = ("jsonl", "txt")


def _schema_object(site_dir: Path) -> dict[str, Any]:
    path = site_dir / SCHEMA_FILE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: not a readable JSON object") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a readable JSON object")
    unknown = sorted(set(obj) - {"task", "context", "base"})
    if unknown:
        raise DataError(f"{path}: schema key {unknown[0]!r} is unknown")
    if obj.get("task") != TASK:
        raise DataError(f"{path}: schema 'task' must be {TASK!r}")
    context = obj.get("context")
    if isinstance(context, bool) or not isinstance(context, int) or not 2 <= context <= MAX_CONTEXT:
        raise DataError(f"{path}: schema 'context' must be an integer in [2, {MAX_CONTEXT}]")
    base = obj.get("base", BASE_DIR)
    if (
        not isinstance(base, str)
        or not base
        or Path(base).is_absolute()
        or ".." in Path(base).parts
    ):
        raise DataError(f"{path}: schema 'base' must be a relative path inside the site directory")
    return obj


def base_dir(site_dir: Path) -> Path:
    """Where the site's base checkpoint is: ``base/``, or the path its schema names (a
    directory without a schema, as a simulation may hand over, holds it in ``base/``).

    Raises:
        DataError: The schema file is invalid.
    """
    if not (site_dir / SCHEMA_FILE).exists():
        return site_dir / BASE_DIR
    return site_dir / str(_schema_object(site_dir).get("base", BASE_DIR))


def _documents(path: Path, fmt: str) -> list[str]:
    text = _read_text(path)
    if fmt == "txt":
        docs = [d.strip() for d in text.replace("\r\n", "\n").split("\n\n")]
        return [d for d in docs if d]
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise DataError(f"{path}: line {number} is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f"{path}: line {number} is not an object with a string 'text'")
        docs.append(obj["text"])
    return docs


def _format(site_dir: Path) -> str:
    found = [
        f
        for f in _FORMATS
        if (site_dir / f"train.{f}").exists() or (site_dir / f"val.{f}").exists()
    ]
    if len(found) > 1:
        raise DataError(f"{site_dir}: holds both train.jsonl/val.jsonl and train.txt/val.txt")
    if not found:
        raise DataError(f"{site_dir / 'train.jsonl'}: file not found (nor train.txt)")
    return found[0]


def _windows(stream: list[int], context: int, source: Path) -> Split:
    n = (len(stream) - 1) // context
    if n < 1:
        raise DataError(
            f"{source}: {len(stream)} tokens, fewer than one window of {context} and the next"
        )
    tokens = np.asarray(stream[: n * context + 1], dtype=np.int64)
    x = tokens[: n * context].reshape(n, context).astype(np.float32)
    y = tokens[context::context][:n].copy()
    return Split(x=x, y=y)


def _class_names(tokenizer: Any, vocab: int) -> tuple[str, ...]:
    names = [
        str(t) for t in tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab))))
    ]
    names += [f"<unused {i}>" for i in range(len(names), vocab)]
    if len(set(names)) != len(names):
        raise DataError("the base's tokenizer names two token ids alike")
    return tuple(names)


def site_schema(context: int, tokenizer: Any, vocab: int) -> Schema:
    """The schema of windows of ``context`` tokens over a vocabulary of ``vocab`` ids; its
    classes are the tokenizer's tokens, named by their digest (a vocabulary listed in every
    hop's metadata would outweigh the adapters), so its hash follows the vocabulary."""
    return Schema(
        task=TASK,
        feature_names=tuple(f"t{i}" for i in range(context)),
        num_classes=vocab,
        class_names=(),
        class_digest=class_digest(_class_names(tokenizer, vocab)),
    )


def read_lm_site(site_dir: Path) -> tuple[Schema, SiteData]:
    """Reads one site's text and tokenizes it into windows (this module's docstring).

    Raises:
        DataError: The schema, a text file or the base's tokenizer is missing or invalid,
            a document holds a token the model cannot output, or a split is too short
            for one window.
    """
    from transformers import AutoConfig

    context = int(_schema_object(site_dir)["context"])
    base = base_dir(site_dir)
    tokenizer = load_tokenizer(base)
    try:
        vocab = int(AutoConfig.from_pretrained(str(base), local_files_only=True).vocab_size)
    except Exception as exc:  # a corrupt config raises the loader's own error types
        raise DataError(f"{base}: unreadable config.json ({type(exc).__name__})") from None
    eos = tokenizer.eos_token_id
    fmt = _format(site_dir)
    splits: list[Split] = []
    for stem in ("train", "val"):
        path = site_dir / f"{stem}.{fmt}"
        stream: list[int] = []
        for doc in _documents(path, fmt):
            stream.extend(tokenizer.encode(doc, add_special_tokens=False))
            if eos is not None:
                stream.append(int(eos))
        if stream and not 0 <= min(stream) <= max(stream) < vocab:
            raise DataError(f"{path}: tokenizes to ids outside the model's vocabulary of {vocab}")
        splits.append(_windows(stream, context, path))
    return site_schema(context, tokenizer, vocab), SiteData(train=splits[0], val=splits[1])
