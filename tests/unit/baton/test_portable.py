"""Tests for baton.ml.portable and the codec's metadata: a result file rebuilds its model
from its own metadata, without Baton's model registry."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from baton.domain import Assignment
from baton.errors import ModelError
from baton.ml.codec import decode_metadata, decode_state, encode_state, save_state_file, state_of
from baton.ml.data import Schema
from baton.ml.models import build_model
from baton.ml.norm import input_norm_of
from baton.ml.portable import load, result_metadata
from baton.plan import parse_plan, plan_digest

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = Schema(
    task="wine",
    feature_names=("alcohol", "ash", "hue", "proline"),
    num_classes=3,
    class_names=("class_0", "class_1", "class_2"),
)
PIN = 'distribution = "baton-fl"\nversion = "0.1.0"\nsha256 = "sha256:' + "ab" * 32 + '"\n'


def _plan_text(model: str, args: str = "", pin: str = "") -> str:
    return (
        f'[run]\nname = "p"\nsites = ["a", "b"]\n\n[model]\nname = "{model}"\n{args}\n'
        f'[task]\ndataset = "wine"\n{pin}'
    )


def _assignment(text: str, hop: int = 3) -> Assignment:
    return Assignment(
        run_id="run-1",
        hop_index=hop,
        cycle=1,
        total_hops=4,
        plan_toml=text,
        plan_signature=b"",
        owner_signing_certificate_pem="",
        owner_encryption_certificate_pem="",
    )


def _trained(name: str, args: dict[str, object], seed: int = 5) -> nn.Module:
    """A registry model with fitted input moments and non-trivial weights."""
    model = build_model(name, args, num_features=4, num_classes=3, seed=seed)
    norm = input_norm_of(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.mean.copy_(torch.randn(4, generator=gen) * 3)
        norm.std.copy_(torch.rand(4, generator=gen) + 0.5)
        norm.fitted.fill_(1.0)
    return model


def _result_file(tmp: Path, model: str, args: str, module: nn.Module) -> Path:
    text = _plan_text(model, args)
    meta = result_metadata(parse_plan(text), SCHEMA, _assignment(text), plan_digest(text))
    path = tmp / "model.safetensors"
    save_state_file(path, state_of(module), metadata=meta)
    return path


def test_metadata_rides_along_and_leaves_the_tensors_alone() -> None:
    state = state_of(_trained("mlp", {"hidden": [8]}))
    plain, tagged = encode_state(state), encode_state(state, metadata={"baton.format": "1"})
    assert decode_metadata(tagged) == {"baton.format": "1"}
    assert decode_metadata(plain) == {}
    a, b = decode_state(plain), decode_state(tagged)
    assert a.keys() == b.keys() == state.keys()
    assert all(torch.equal(a[k], b[k]) for k in state)


def test_metadata_is_read_from_the_header_alone() -> None:
    # Tensor bytes cut off: parsing tensors would fail, reading the metadata does not.
    blob = encode_state({"w": torch.ones(64)}, metadata={"k": "v"})
    assert decode_metadata(blob[:-100]) == {"k": "v"}
    with pytest.raises(ModelError, match="not a valid safetensors blob"):
        decode_state(blob[:-100])


@pytest.mark.parametrize("meta", [{"k": 1}, ["k"], "k"])
def test_metadata_that_is_not_strings_is_refused(meta: object) -> None:
    header = json.dumps({"__metadata__": meta}).encode()
    with pytest.raises(ModelError, match="metadata is not a map of strings"):
        decode_metadata(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ModelError, match="strings to strings"):
        encode_state({"w": torch.ones(1)}, metadata=meta)  # type: ignore[arg-type]


def test_result_metadata_names_task_model_inputs_classes_and_run() -> None:
    text = _plan_text("mlp", "args = { hidden = [8, 4], dropout = 0.1 }", PIN)
    meta = result_metadata(parse_plan(text), SCHEMA, _assignment(text), plan_digest(text))
    assert meta == {
        "baton.format": "1",
        "baton.task": "wine",
        "baton.task_pin": json.dumps(
            {"distribution": "baton-fl", "sha256": "sha256:" + "ab" * 32, "version": "0.1.0"},
            separators=(",", ":"),
        ),
        "baton.model": "mlp",
        "baton.model_args": '{"dropout":0.1,"hidden":[8,4]}',
        "baton.inputs": '["alcohol","ash","hue","proline"]',
        "baton.classes": '["class_0","class_1","class_2"]',
        "baton.schema": SCHEMA.to_json(),
        "baton.run_id": "run-1",
        "baton.plan_hash": plan_digest(text),
        "baton.hop": "3",
    }
    unpinned = _plan_text("logreg")
    got = result_metadata(parse_plan(unpinned), SCHEMA, _assignment(unpinned), "h")
    assert got["baton.task_pin"] == ""
    assert got["baton.model_args"] == "{}"


PROBE = """
import sys
import torch
from safetensors.torch import load_file, save_file
from baton.ml.portable import load

model, meta = load(sys.argv[1])
x = load_file(sys.argv[2])["x"]
with torch.no_grad():
    save_file({"logits": model(x)}, sys.argv[3])
heavy = sorted(m for m in sys.modules if m.startswith(("baton.ml.models", "baton.ml.families")))
print(meta.model, meta.classes, meta.inputs, heavy)
"""


@pytest.mark.parametrize(
    ("name", "args", "toml"),
    [
        ("mlp", {"hidden": [8, 5], "dropout": 0.2}, "args = { hidden = [8, 5], dropout = 0.2 }"),
        ("mlp", {}, ""),
        ("logreg", {}, ""),
    ],
)
def test_a_fresh_interpreter_rebuilds_the_model_without_the_registry(
    tmp_path: Path, name: str, args: dict[str, object], toml: str
) -> None:
    original = _trained(name, args).eval()
    path = _result_file(tmp_path, name, toml, original)
    x = torch.randn(32, 4) * 4
    x[::5, 1] = float("nan")  # missing values are imputed with the fitted mean
    from safetensors.torch import load_file, save_file

    save_file({"x": x}, tmp_path / "x.safetensors")
    probe = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE), str(path), str(tmp_path / "x.safetensors"),
         str(tmp_path / "out.safetensors")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("(")[0].strip() == name
    assert probe.stdout.rstrip().endswith("[]"), probe.stdout  # no registry module loaded
    with torch.no_grad():
        expected = original(x)
    got = load_file(tmp_path / "out.safetensors")["logits"]
    assert torch.isfinite(got).all()
    assert torch.equal(got, expected)


def test_load_returns_the_metadata_parsed(tmp_path: Path) -> None:
    path = _result_file(tmp_path, "logreg", "", _trained("logreg", {}))
    model, meta = load(path)
    assert not model.training
    assert meta.inputs == SCHEMA.feature_names
    assert meta.classes == SCHEMA.class_names
    assert (meta.task, meta.run_id, meta.hop, meta.task_pin) == ("wine", "run-1", 3, None)
    assert Schema.from_json(meta.schema, source="meta") == SCHEMA


def test_another_model_is_named_in_the_error(tmp_path: Path) -> None:
    text = _plan_text("causal_lm")
    meta = result_metadata(parse_plan(text), SCHEMA, _assignment(text), "h")
    path = tmp_path / "lm.safetensors"
    save_state_file(path, {"w": torch.ones(2)}, metadata=meta)
    with pytest.raises(ModelError, match="model 'causal_lm' has no plain-torch rebuild"):
        load(path)


def test_a_file_without_baton_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_state_file(path, state_of(_trained("logreg", {})))
    with pytest.raises(ModelError, match="no Baton result metadata of format 1"):
        load(path)


def test_weights_that_do_not_fit_the_metadata_are_refused(tmp_path: Path) -> None:
    # The metadata says [8] hidden units; the weights hold [6].
    narrow = _trained("mlp", {"hidden": [6]})
    path = _result_file(tmp_path, "mlp", "args = { hidden = [8] }", narrow)
    with pytest.raises(ModelError, match=r"layer widths \[6\] disagree"):
        load(path)
    wide = build_model("logreg", {}, num_features=5, num_classes=3, seed=0)
    path = _result_file(tmp_path, "logreg", "", wide)
    with pytest.raises(ModelError, match=r"'input_norm\.mean' has shape"):
        load(path)
