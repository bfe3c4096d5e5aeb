"""The demo's base checkpoint: loadable offline by plain ``transformers``, made once per seed
and made again, byte for byte, when a cached copy no longer matches its hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim.llm.base import MANIFEST, VERSION, VOCAB_SIZE, cached_base
from sim.llm.corpora import department_texts


def test_the_cached_base_loads_with_plain_transformers() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cached_base(seed=0)
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert cached_base(seed=0) == path
    assert weights.stat().st_mtime_ns == stamp  # reused, not made again
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert len(tokenizer) == VOCAB_SIZE
    assert model.config.vocab_size == VOCAB_SIZE
    assert model.config.model_type == "llama"
    note = department_texts("radiology", 1, seed=0)[0]
    ids = tokenizer(note)["input_ids"]
    assert tokenizer.decode(ids) == note  # byte level: clinical text never falls out
    assert max(ids) < VOCAB_SIZE


@pytest.mark.slow
def test_a_damaged_cached_base_is_made_again_with_the_same_bytes(tmp_path: Path) -> None:
    good = cached_base(seed=0)
    copy = tmp_path / "llm-base" / f"v{VERSION}-seed0"
    shutil.copytree(good, copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(weights))

    rebuilt = cached_base(seed=0, cache_dir=tmp_path)

    assert rebuilt == copy
    for name in sorted(p.name for p in good.iterdir()):
        assert (rebuilt / name).read_bytes() == (good / name).read_bytes(), name
    assert (rebuilt / MANIFEST).exists()
    assert [p.name for p in tmp_path.joinpath("llm-base").iterdir()] == [copy.name]
