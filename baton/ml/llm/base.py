"""The pretrained base a site holds: its content hash (the plan's pin) and loading it."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baton.errors import DataError, ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BASE_DIR", "base_hash", "check_base", "load_base", "load_tokenizer"]

logger = logging.getLogger(__name__)

BASE_DIR = "base"
"""Where a site's base checkpoint is, relative to its data directory, unless its schema
names another path."""
_CHUNK = 1 << 20


def _files(root: Path) -> list[tuple[str, Path]]:
    """Every file under ``root`` as ``(relative POSIX path, path)``, sorted by name.

    Raises:
        DataError: ``root`` is not a directory, holds no file, or holds a link that leads
            outside it or something that is neither a file nor a directory.
    """
    if not root.is_dir():
        raise DataError(f"{root}: base checkpoint directory not found")
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise DataError(f"{path}: a link that leads outside the base checkpoint")
            if name in dirnames:
                if path.is_symlink():
                    raise DataError(f"{path}: a linked directory inside the base checkpoint")
                continue
            if not path.is_file():
                raise DataError(f"{path}: neither a file nor a directory")
            found.append((path.relative_to(real_root).as_posix(), path))
    if not found:
        raise DataError(f"{root}: the base checkpoint directory holds no file")
    return sorted(found)


def base_hash(path: Path) -> str:
    """The content hash of a checkpoint directory: ``sha256:`` and 64 hex digits.

    It covers every file under the directory (configuration, weights, tokenizer and any
    other), in sorted order of their relative paths: each file's path, its size and its
    bytes. A renamed, added, removed or changed file changes it; where the directory sits
    does not. ``path`` may be a link to the directory; a link inside it must stay inside.

    Raises:
        DataError: The directory is missing, empty, unreadable or holds a link leading out.
    """
    digest = hashlib.sha256(b"baton.base.v1\0")
    for rel, file in _files(path):
        name = rel.encode("utf-8")
        try:
            size = file.stat().st_size
            digest.update(len(name).to_bytes(8, "big") + name + size.to_bytes(8, "big"))
            with file.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror})") from None
    return f"sha256:{digest.hexdigest()}"


def check_base(path: Path, pinned: str, *, where: str) -> None:
    """Refuses a base checkpoint whose hash is not the pinned one.

    Raises:
        DataError: The hashes differ (the message names both), or the directory is unusable.
    """
    actual = base_hash(path)
    if actual != pinned:
        raise DataError(
            f"{path}: {where} base checkpoint has hash {actual}, but the plan pins {pinned}; "
            "every site must hold the same base"
        )


def _require_config(path: Path) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: base checkpoint directory not found")
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a checkpoint directory (config.json not found)")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in the checkpoint directory ``path`` (never downloaded).

    Raises:
        DataError: The directory is missing or holds no readable tokenizer.
    """
    from transformers import AutoTokenizer

    _require_config(path)
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # a corrupt tokenizer file raises the loaders' own error types
        raise DataError(f"{path}: no readable tokenizer ({type(exc).__name__})") from None
    return tokenizer  # type: ignore[no-any-return]


def load_base(path: Path, *, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The pretrained causal language model and its tokenizer in the checkpoint ``path``.

    Loads local files only (nothing is downloaded); the model comes in evaluation mode.

    Raises:
        DataError: The directory is missing or is not a checkpoint (no ``config.json``),
            or its tokenizer is unreadable.
        ModelError: The configuration or the weights are unreadable or corrupt.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    _require_config(path)
    try:
        # safetensors only, and no code from the checkpoint: a base is data, never a program.
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
        )
    except Exception as exc:  # corrupt weights raise the loaders' own error types
        raise ModelError(
            f"{path}: the base checkpoint does not load ({type(exc).__name__})"
        ) from None
    tokenizer = load_tokenizer(path)
    logger.debug("loaded base %s (%s)", path, type(model).__name__)
    return model.eval(), tokenizer
