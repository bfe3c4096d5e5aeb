"""Model weights as safetensors bytes (never pickle), and strict loading into a model."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import torch as st
from torch import nn

from baton.errors import ModelError
from baton.io import atomic_write

logger = logging.getLogger(__name__)

_NOT_SAFETENSORS = "not a valid safetensors blob"
_T = TypeVar("_T")


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous, detached CPU copies of the model's parameters and buffers."""
    return {
        name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()
    }


def encode_state(
    state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serializes a state dict to safetensors bytes.

    Tensors are copied to contiguous CPU memory first, so views and shared storage are fine.
    ``metadata`` goes into the header's ``__metadata__`` (string to string); the tensor
    bytes are the same with or without it.

    Raises:
        ModelError: A key is not a string or a value is not a tensor, or ``metadata`` holds
            something other than strings.
    """
    plain: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ModelError("a state dict maps tensor names (str) to tensors")
        plain[name] = tensor.detach().to("cpu", copy=True).contiguous()
    if metadata is None:
        return st.save(plain)
    if not _strings(metadata):
        raise ModelError("safetensors metadata maps strings to strings")
    return st.save(plain, metadata=dict(metadata))


def _strings(meta: object) -> bool:
    return isinstance(meta, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    )


def decode_state(data: bytes) -> dict[str, torch.Tensor]:
    """Parses safetensors bytes into a state dict without executing anything.

    Raises:
        ModelError: ``not a valid safetensors blob``, whatever is wrong with the bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelError(f"{_NOT_SAFETENSORS}: expected bytes")
    data = bytes(data)
    _header(data)
    try:
        state = st.load(data)
    except Exception as exc:
        raise ModelError(f"{_NOT_SAFETENSORS}: {type(exc).__name__}") from None
    return dict(state)


def _header(data: bytes) -> dict[str, object]:
    # The cheap structural checks run first so malformed input never reaches native code
    # with a header it would have to guess about.
    if len(data) < 8:
        raise ModelError(f"{_NOT_SAFETENSORS}: shorter than its length prefix")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ModelError(f"{_NOT_SAFETENSORS}: header length exceeds the blob")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{_NOT_SAFETENSORS}: header is not JSON") from None
    if not isinstance(header, dict):
        raise ModelError(f"{_NOT_SAFETENSORS}: header is not a JSON object")
    return header


def decode_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (empty without one), read from the JSON
    header alone: no tensor is parsed and nothing is executed.

    Raises:
        ModelError: The bytes are not a safetensors blob, or its metadata is not a JSON
            object of strings.
    """
    meta = _header(bytes(data)).get("__metadata__", {})
    if not isinstance(meta, dict) or not _strings(meta):
        raise ModelError(f"{_NOT_SAFETENSORS}: metadata is not a map of strings")
    return dict(meta)


def save_state_file(
    path: Path, state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> None:
    """Writes a state dict (and ``metadata``, see :func:`encode_state`) to ``path`` as
    safetensors (mode 0600), atomically and durably (:func:`baton.io.atomic_write`),
    creating its directory if needed."""
    blob = encode_state(state, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, blob)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file written by :func:`save_state_file` (or anyone else).

    Raises:
        ModelError: The file is missing, unreadable or not a valid safetensors blob.
    """
    return _from_file(path, decode_state)


def load_metadata_file(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (:func:`decode_metadata`).

    Raises:
        ModelError: The file is missing, unreadable or not a valid safetensors blob.
    """
    return _from_file(path, decode_metadata)


def _from_file(path: Path, decode: Callable[[bytes], _T]) -> _T:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: weights file not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read weights ({exc.strerror})") from None
    try:
        return decode(data)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc.message}") from None


def load_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, max_norm: float | None = None
) -> None:
    """Copies ``state`` into ``model``, strictly.

    Constraints: the key set MUST equal the model's state dict keys; every tensor MUST have
    the model's shape and dtype and hold only finite values; with ``max_norm``, the L2 norm
    of all floating-point values together MUST NOT exceed it. Nothing is copied unless all
    tensors pass.

    Raises:
        ModelError: Naming the first offending tensor (in the model's order; then the
            first unexpected name in sorted order).
    """
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in state:
            raise ModelError(f"tensor {name!r} is missing from the weights")
        got = state[name]
        if not isinstance(got, torch.Tensor):
            raise ModelError(f"tensor {name!r} is not a tensor")
        if got.shape != ref.shape:
            raise ModelError(
                f"tensor {name!r} has shape {list(got.shape)}, the model expects {list(ref.shape)}"
            )
        if got.dtype != ref.dtype:
            raise ModelError(
                f"tensor {name!r} has dtype {got.dtype}, the model expects {ref.dtype}"
            )
        if (got.is_floating_point() or got.is_complex()) and not bool(torch.isfinite(got).all()):
            raise ModelError(f"tensor {name!r} holds non-finite values")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelError(f"tensor {unexpected[0]!r} is not part of the model")
    if max_norm is not None:
        norm = weight_norm(state)
        if norm > max_norm:
            raise ModelError(
                f"weights have L2 norm {norm:.4g}, above the plan's bound {max_norm:.4g}"
            )
    model.load_state_dict(dict(state), strict=True)


def weight_norm(state: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of every floating-point value in ``state`` taken together."""
    total = torch.zeros((), dtype=torch.float64)
    for t in state.values():
        if t.is_floating_point():
            total += t.detach().double().pow(2).sum()
    return float(total.sqrt())


def schema_hash(state: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a model's tensor names, dtypes and shapes (not its values)."""
    layout = [[name, str(t.dtype), list(t.shape)] for name, t in sorted(state.items())]
    return hashlib.sha256(json.dumps(layout, separators=(",", ":")).encode()).hexdigest()
