"""Within-hop checkpoints: sharded model and optimizer state, so an interrupted hop resumes.

Nothing here unpickles. Each checkpoint is a directory ``step-NNNNNNNN`` in which every
rank writes its own shard: ``rank-NNNNN.safetensors`` holds the rank's tensors (the local
shard of a sharded parameter, its optimizer moments and step counters) and
``rank-NNNNN.json`` indexes them and holds the non-tensor values (an optimizer's learning
rate, betas, flags) as plain JSON. After a barrier, rank 0 points ``latest.json`` at the
directory (atomically, with :func:`baton.io.atomic_write`), so ``latest.json`` only ever
names a complete checkpoint, and removes older ones.

Loading reads safetensors and size-bounded JSON only, and copies each tensor into the
tensor the running model and optimizer already hold, after checking its name, dtype and
shape: whoever can write the job directory (or a multi-node ``shared_dir``) can at worst
make the hop fail or train from other numbers, never run code in the workers. A
checkpoint resumes only on the same number of workers it was written by.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save as to_safetensors
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from baton.errors import ModelError
from baton.io import atomic_write, fsync_dir

logger = logging.getLogger(__name__)

LATEST = "latest.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024
"""Largest per-rank JSON index (and ``latest.json``) a worker reads."""

_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
"""Optimizer state keyed by parameter name: the stages of a pipeline each have their own
optimizer, whose positional parameter groups would otherwise collide in one checkpoint."""

_SCALARS = (type(None), bool, int, float, str)


def latest(directory: Path) -> tuple[int, Path] | None:
    """The step and directory of the newest complete checkpoint, or None."""
    try:
        raw = _read_json(directory / LATEST)
    except FileNotFoundError:
        return None
    step, name = raw.get("step"), raw.get("name")
    if not isinstance(step, int) or name != f"step-{step:08d}":
        raise ModelError(f"{directory / LATEST} does not name a checkpoint")
    return step, directory / name


def save(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, step: int, directory: Path, rank: int
) -> None:
    """Saves a checkpoint after ``step`` optimizer steps (a collective: every rank calls it)."""
    name = f"step-{step:08d}"
    target = directory / name
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in _flat(model, optimizer).items():
        if isinstance(value, torch.Tensor):
            local = value.to_local() if isinstance(value, DTensor) else value
            tensors[key] = local.detach().to("cpu", copy=True).contiguous()
        else:
            values[key] = _to_json(key, value)
    # Durable, atomic and private (0600): the shard holds plaintext weights.
    atomic_write(target / f"rank-{rank:05d}.safetensors", to_safetensors(tensors))
    index = {"step": step, "tensors": sorted(tensors), "values": values}
    atomic_write(target / f"rank-{rank:05d}.json", json.dumps(index))
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if dist.is_initialized():
        dist.barrier()
    if rank != 0:
        return
    fsync_dir(target)
    atomic_write(directory / LATEST, json.dumps({"step": step, "name": name, "world": world_size}))
    for old in directory.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    logger.debug("checkpointed step %d", step)


def load(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, *, rank: int) -> None:
    """Loads this rank's shard of the checkpoint at ``path`` into the (already
    parallelized) model and optimizer.

    Raises:
        ModelError: The checkpoint was written by another number of workers, or its
            names, dtypes or shapes do not match the model and optimizer, or a file is
            missing, oversized or malformed.
    """
    world = _read_json(path.parent / LATEST).get("world")
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if world != world_size:
        raise ModelError(
            f"the checkpoint at {path} was written by {world} workers, not {world_size}"
        )
    index = _read_json(path / f"rank-{rank:05d}.json")
    template = _flat(model, optimizer)
    expected = sorted(k for k, v in template.items() if isinstance(v, torch.Tensor))
    values = index.get("values")
    if index.get("tensors") != expected or not isinstance(values, dict):
        raise ModelError(f"the checkpoint at {path} does not match the model and optimizer")
    if set(values) != set(template) - set(expected):
        raise ModelError(f"the checkpoint at {path} does not match the optimizer's settings")
    with safe_open(str(path / f"rank-{rank:05d}.safetensors"), framework="pt") as shard:
        if sorted(shard.keys()) != expected:
            raise ModelError(f"the checkpoint at {path} does not hold the model's tensors")
        with torch.no_grad():
            for key in expected:
                held = template[key]
                local = held.to_local() if isinstance(held, DTensor) else held
                saved = shard.get_tensor(key)
                if saved.dtype != local.dtype or saved.shape != local.shape:
                    raise ModelError(f"the checkpoint's {key!r} does not fit the model")
                local.copy_(saved)
    for key, value in values.items():
        template[key] = _from_json(value)
    model_state = {k[6:]: v for k, v in template.items() if k.startswith("model/")}
    optim_state = {k[6:]: v for k, v in template.items() if k.startswith("optim/")}
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=_OPTIONS,
    )


def _flat(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and the optimizer's state in one flat dict, keys prefixed by owner."""
    model_state, optim_state = get_state_dict(model, optimizer, options=_OPTIONS)
    flat: dict[str, Any] = {f"model/{k}": v for k, v in model_state.items()}
    flat.update({f"optim/{k}": v for k, v in optim_state.items()})
    return flat


def _to_json(key: str, value: Any) -> dict[str, Any]:
    """A non-tensor state value as JSON (tuples kept apart from lists)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(item, _SCALARS) for item in items):
        raise ModelError(f"the training state's {key!r} is neither a tensor nor a plain value")
    if isinstance(value, (list, tuple)):
        return {"kind": type(value).__name__, "value": list(value)}
    return {"kind": "scalar", "value": value}


def _from_json(entry: Any) -> Any:
    """The value :func:`_to_json` wrote, checked to be plain data."""
    if not isinstance(entry, dict) or entry.get("kind") not in ("scalar", "list", "tuple"):
        raise ModelError("a checkpoint value is malformed")
    value = entry.get("value")
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, _SCALARS) for item in items):
        raise ModelError("a checkpoint value is malformed")
    if entry["kind"] == "scalar":
        return value
    if not isinstance(value, list):
        raise ModelError("a checkpoint value is malformed")
    return tuple(value) if entry["kind"] == "tuple" else value


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file of at most :data:`MAX_INDEX_BYTES`."""
    with path.open("rb") as file:
        raw = file.read(MAX_INDEX_BYTES + 1)
    if len(raw) > MAX_INDEX_BYTES:
        raise ModelError(f"{path} is larger than {MAX_INDEX_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    return data
