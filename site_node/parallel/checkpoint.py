"""Within-hop checkpoints: sharded model and optimizer state, so an interrupted hop resumes.

Each checkpoint is a ``torch.distributed.checkpoint`` directory ``step-NNNNNNNN``; every
rank writes its own shards. Rank 0 then points ``latest.json`` at it (atomically, with
:func:`baton.io.atomic_write`), so ``latest.json`` only ever names a complete checkpoint,
and removes older ones.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from baton.io import atomic_write

logger = logging.getLogger(__name__)

LATEST = "latest.json"

_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
"""Optimizer state keyed by parameter name: the stages of a pipeline each have their own
optimizer, whose positional parameter groups would otherwise collide in one checkpoint."""


def latest(directory: Path) -> tuple[int, Path] | None:
    """The step and directory of the newest complete checkpoint, or None."""
    try:
        raw = json.loads((directory / LATEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return int(raw["step"]), directory / str(raw["name"])


def save(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, step: int, directory: Path, rank: int
) -> None:
    """Saves a checkpoint after ``step`` optimizer steps (a collective: every rank calls it)."""
    name = f"step-{step:08d}"
    model_state, optim_state = get_state_dict(model, optimizer, options=_OPTIONS)
    dcp_save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory / name))
    if rank != 0:
        return
    atomic_write(directory / LATEST, json.dumps({"step": step, "name": name}))
    for old in directory.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    logger.debug("checkpointed step %d", step)


def load(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Loads the checkpoint at ``path`` into the (already parallelized) model and optimizer."""
    model_state, optim_state = get_state_dict(model, optimizer, options=_OPTIONS)
    # Loads in place into the tensors of the two dicts.
    dcp_load({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=_OPTIONS,
    )
