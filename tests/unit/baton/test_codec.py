"""Tests for baton.ml.codec: safetensors encoding, fuzzed decoding and strict loading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.codec import (
    decode_state,
    encode_state,
    load_into,
    load_state_file,
    save_state_file,
    state_of,
)
from baton.ml.models import build_model

NOT_SAFETENSORS = "not a valid safetensors blob"


def _state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.tensor([1, -2], dtype=torch.int64),
        "h": torch.tensor([0.5, 1.5], dtype=torch.bfloat16),
        "flag": torch.tensor(1.0),
    }


def _model() -> nn.Module:
    return build_model("mlp", {"hidden": [4]}, num_features=3, num_classes=2, seed=0)


def test_round_trip_is_exact() -> None:
    state = _state()
    got = decode_state(encode_state(state))
    assert sorted(got) == sorted(state)
    for key, value in state.items():
        assert got[key].dtype == value.dtype
        assert got[key].shape == value.shape
        assert torch.equal(got[key], value)


def test_encode_accepts_views_and_shared_storage() -> None:
    base = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    state = {"t": base.t(), "row": base[1], "same": base}
    got = decode_state(encode_state(state))
    assert torch.equal(got["t"], base.t())
    assert torch.equal(got["row"], base[1])


def test_encode_rejects_non_tensors() -> None:
    with pytest.raises(ModelError, match="maps tensor names"):
        encode_state({"x": [1.0, 2.0]})  # type: ignore[dict-item]


def test_encoding_starts_with_a_header_not_a_pickle() -> None:
    blob = encode_state(_state())
    assert not blob.startswith(b"\x80")  # pickle protocol marker
    assert blob[8:9] == b"{"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 7, b"\x08" + b"\x00" * 7 + b"[1,2,3]]", b"\xff" * 64, b"PK\x03\x04zipfile"],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ModelError, match=NOT_SAFETENSORS):
        decode_state(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(ModelError, match=NOT_SAFETENSORS):
        decode_state("not bytes")  # type: ignore[arg-type]


def test_decode_fuzz_random_and_truncated() -> None:
    rng = random.Random(1234)
    blob = encode_state(_state())
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(ModelError, match=NOT_SAFETENSORS):
            decode_state(data)
    for cut in range(len(blob)):
        with pytest.raises(ModelError, match=NOT_SAFETENSORS):
            decode_state(blob[:cut])


def test_decode_fuzz_mutations_only_raise_model_error() -> None:
    rng = random.Random(99)
    blob = encode_state(_state())
    outcomes = {"ok": 0, "rejected": 0}
    messages: list[str] = []
    for _ in range(600):
        mutated = bytearray(blob)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if rng.random() < 0.2:
            mutated += rng.randbytes(rng.randrange(1, 9))
        try:
            decode_state(bytes(mutated))
        except ModelError as exc:
            messages.append(str(exc))
            outcomes["rejected"] += 1
        else:
            outcomes["ok"] += 1
    assert all(NOT_SAFETENSORS in m for m in messages)
    # Flips inside tensor data decode fine; flips in the header and appended bytes do not.
    assert outcomes["rejected"] > 100
    assert outcomes["ok"] > 10


def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "model.safetensors"
    save_state_file(path, _state())
    got = load_state_file(path)
    assert torch.equal(got["w"], _state()["w"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]


def test_load_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ModelError, match=f"{missing}: weights file not found"):
        load_state_file(missing)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04\x95 a pickle")
    with pytest.raises(ModelError, match=f"{bad}: {NOT_SAFETENSORS}"):
        load_state_file(bad)


def test_state_of_is_a_detached_copy_with_buffers() -> None:
    model = _model()
    state = state_of(model)
    assert "input_norm.mean" in state
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in state.values())
    assert not any(t.requires_grad for t in state.values())
    state["body.0.weight"].fill_(7.0)
    assert not torch.equal(model.state_dict()["body.0.weight"], state["body.0.weight"])


def test_load_into_copies_values() -> None:
    source = build_model("mlp", {"hidden": [4]}, num_features=3, num_classes=2, seed=9)
    target = _model()
    load_into(target, decode_state(encode_state(state_of(source))))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def _mutated(change: str) -> dict[str, torch.Tensor]:
    state = state_of(_model())
    if change == "missing":
        del state["body.0.bias"]
    elif change == "extra":
        state["zzz.extra"] = torch.zeros(1)
    elif change == "shape":
        state["body.0.bias"] = torch.zeros(5)
    elif change == "dtype":
        state["body.0.bias"] = state["body.0.bias"].double()
    elif change == "nan":
        state["body.2.weight"][0, 0] = float("nan")
    elif change == "inf":
        state["input_norm.std"][1] = float("inf")
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "tensor 'body.0.bias' is missing from the weights"),
        ("extra", "tensor 'zzz.extra' is not part of the model"),
        ("shape", r"tensor 'body.0.bias' has shape \[5\], the model expects \[4\]"),
        ("dtype", "tensor 'body.0.bias' has dtype torch.float64, the model expects torch.float32"),
        ("nan", "tensor 'body.2.weight' holds non-finite values"),
        ("inf", "tensor 'input_norm.std' holds non-finite values"),
    ],
)
def test_load_into_is_strict_and_atomic(change: str, message: str) -> None:
    model = _model()
    before = state_of(model)
    with pytest.raises(ModelError, match=message):
        load_into(model, _mutated(change))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_load_into_enforces_the_norm_bound() -> None:
    import torch
    from torch import nn

    from baton.ml.codec import load_into, weight_norm

    model = nn.Linear(2, 1, bias=False)
    state = {"weight": torch.tensor([[3.0, 4.0]])}
    assert weight_norm(state) == pytest.approx(5.0)
    load_into(model, state, max_norm=5.0)
    assert torch.equal(model.weight.detach(), state["weight"])
    with pytest.raises(ModelError, match=r"L2 norm 10, above the plan's bound 5"):
        load_into(model, {"weight": torch.tensor([[6.0, 8.0]])}, max_norm=5.0)
    # Nothing was copied.
    assert torch.equal(model.weight.detach(), state["weight"])
