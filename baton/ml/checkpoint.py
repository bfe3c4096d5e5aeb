"""Within-hop checkpoints: model, optimizer and loop state as safetensors and JSON, so an
interrupted hop resumes.

Nothing here unpickles. Each checkpoint is a directory ``step-NNNNNNNN`` in which every
rank writes its own shard (the in-process trainer is rank 0 of 1):
``rank-NNNNN.safetensors`` holds the rank's tensors (the local shard of a sharded
parameter, its optimizer moments and step counters, and any ``extra`` tensors of the
loop: RNG states as uint8 tensors, the losses so far) and ``rank-NNNNN.json`` indexes them
and holds the non-tensor values (an optimizer's learning rate, betas, flags) as plain
JSON. After a barrier, rank 0 points ``latest.json`` at the directory (atomically, with
:func:`baton.io.atomic_write`), so ``latest.json`` only ever names a complete checkpoint,
and removes older ones. Every file is private (0600) in a private (0700) directory.

Loading reads safetensors and size-bounded JSON only, checks every name, dtype and shape
against the running model and optimizer before it changes anything, then copies each
tensor into the tensor they already hold: whoever can write the checkpoint directory can
at worst make the hop fail or train from other numbers, never run code. A checkpoint
resumes only on the same number of workers it was written by.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as to_safetensors
from torch import nn

from baton.errors import ModelError
from baton.io import atomic_write, fsync_dir

__all__ = ["LATEST", "MAX_INDEX_BYTES", "latest", "load", "save"]

logger = logging.getLogger(__name__)

LATEST = "latest.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024
"""Largest per-rank JSON index (and ``latest.json``) a worker reads."""

_SCALARS = (type(None), bool, int, float, str)
_EXTRA = "extra/"


def latest(directory: Path) -> tuple[int, Path] | None:
    """The step and directory of the newest complete checkpoint, or None.

    Raises:
        ModelError: ``latest.json`` is oversized, malformed or names no checkpoint.
    """
    try:
        raw = _read_json(directory / LATEST)
    except FileNotFoundError:
        return None
    step, name = raw.get("step"), raw.get("name")
    if not isinstance(step, int) or name != f"step-{step:08d}":
        raise ModelError(f"{directory / LATEST} does not name a checkpoint")
    return step, directory / name


def save(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    directory: Path,
    rank: int,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Saves a checkpoint after ``step`` optimizer steps (a collective: every rank calls it).

    Args:
        model: The (possibly parallelized) model.
        optimizer: Its optimizer.
        step: Optimizer steps taken.
        directory: The hop's checkpoint directory (created private, 0700).
        rank: This worker's rank (0 in process).
        extra: Further tensors of this rank's loop state (RNG states, losses), returned
            by :func:`load`.
    """
    name = f"step-{step:08d}"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / name
    target.mkdir(exist_ok=True, mode=0o700)
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in _flat(model, optimizer).items():
        if isinstance(value, torch.Tensor):
            tensors[key] = _local(value).detach().to("cpu", copy=True).contiguous()
        else:
            values[key] = _to_json(key, value)
    names = sorted(tensors)
    for key, value in (extra or {}).items():
        tensors[_EXTRA + key] = value.detach().to("cpu", copy=True).contiguous()
    # Durable, atomic and private (0600): the shard holds plaintext weights.
    atomic_write(target / f"rank-{rank:05d}.safetensors", to_safetensors(tensors))
    index = {"step": step, "tensors": names, "values": values, "extra": sorted(extra or {})}
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


def load(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    path: Path,
    *,
    rank: int,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Loads this rank's shard of the checkpoint at ``path`` into the (already
    parallelized) model and optimizer, after checking all of it fits: a checkpoint that
    does not leaves both untouched.

    Args:
        model: The model, as built for the hop.
        optimizer: Its fresh optimizer.
        path: A checkpoint directory, from :func:`latest`.
        rank: This worker's rank.
        extra: The ``extra`` tensors :func:`save` was given, each with the dtype and
            shape the saved one must have.

    Returns:
        The saved ``extra`` tensors.

    Raises:
        ModelError: The checkpoint was written by another number of workers, or its
            names, dtypes or shapes do not match the model, the optimizer and ``extra``,
            or a file is missing, oversized or malformed.
    """
    try:
        world = _read_json(path.parent / LATEST).get("world")
        index = _read_json(path / f"rank-{rank:05d}.json")
    except FileNotFoundError as exc:
        raise ModelError(f"the checkpoint at {path} lacks {Path(exc.filename).name}") from None
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if world != world_size:
        raise ModelError(
            f"the checkpoint at {path} was written by {world} workers, not {world_size}"
        )
    template = _flat(model, optimizer)
    expected = sorted(k for k, v in template.items() if isinstance(v, torch.Tensor))
    values = index.get("values")
    if index.get("tensors") != expected or not isinstance(values, dict):
        raise ModelError(f"the checkpoint at {path} does not match the model and optimizer")
    if set(values) != set(template) - set(expected):
        raise ModelError(f"the checkpoint at {path} does not match the optimizer's settings")
    if index.get("extra", []) != sorted(extra or {}):
        raise ModelError(f"the checkpoint at {path} does not hold the training loop's state")
    plain = {key: _from_json(value) for key, value in values.items()}
    wanted = {key: _local(template[key]) for key in expected}
    wanted.update({_EXTRA + key: value for key, value in (extra or {}).items()})
    loaded: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path / f"rank-{rank:05d}.safetensors"), framework="pt") as shard:
            if sorted(shard.keys()) != sorted(wanted):
                raise ModelError(f"the checkpoint at {path} does not hold the model's tensors")
            for key, held in wanted.items():
                saved = shard.get_tensor(key)
                if saved.dtype != held.dtype or saved.shape != held.shape:
                    raise ModelError(f"the checkpoint's {key!r} does not fit the model")
                loaded[key] = saved
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"the checkpoint at {path} cannot be read: {exc}") from None
    with torch.no_grad():
        for key in expected:
            wanted[key].copy_(loaded[key])
    template.update(plain)
    if not dist.is_initialized():
        # One process: the tensors were copied into the model's and optimizer's own.
        names = {p: name for name, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for key in group:
                if key != "params":
                    group[key] = template[f"optim/param_groups.{names[group['params'][0]]}.{key}"]
        return {key: loaded[_EXTRA + key] for key in extra or {}}
    from torch.distributed.checkpoint.state_dict import set_state_dict

    model_state = {k[6:]: v for k, v in template.items() if k.startswith("model/")}
    optim_state = {k[6:]: v for k, v in template.items() if k.startswith("optim/")}
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=_options(),
    )
    return {key: loaded[_EXTRA + key] for key in extra or {}}


def _local(value: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's local shard; any other tensor as it is."""
    to_local = getattr(value, "to_local", None)  # a DTensor's, without importing DTensor
    return value if to_local is None else cast("torch.Tensor", to_local())


def _options() -> Any:
    """Optimizer state keyed by parameter name: the stages of a pipeline each have their
    own optimizer, whose positional parameter groups would otherwise collide."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def _flat(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and the optimizer's state in one flat dict, keys prefixed by owner, as
    ``torch.distributed.checkpoint`` flattens them (optimizer state keyed by parameter
    name). One process computes the same keys itself, without importing it (seconds)."""
    if dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    else:
        model_state, optim_state = model.state_dict(), _plain_optim_state(model, optimizer)
    flat: dict[str, Any] = {f"model/{k}": v for k, v in model_state.items()}
    flat.update({f"optim/{k}": v for k, v in optim_state.items()})
    return flat


def _plain_optim_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state flattened by parameter name, its own tensors (not copies).

    A fresh optimizer first takes one step at learning rate 0 with zero gradients, as
    ``torch.distributed.checkpoint`` does, so its state exists to be loaded into.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not optimizer.state and all(p.grad is None for p in params):
        lrs = [group["lr"] for group in optimizer.param_groups]
        for p in params:
            p.grad = torch.zeros_like(p)
        for group in optimizer.param_groups:
            group["lr"] = 0.0
        optimizer.step()
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
    names = {p: name for name, p in model.named_parameters()}
    flat: dict[str, Any] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                flat[f"state.{names[p]}.{key}"] = value
            for key, value in group.items():
                if key != "params":
                    flat[f"param_groups.{names[p]}.{key}"] = value
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
