"""The demo's synthetic text: department notes and the base's generic text."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import pytest

from baton.errors import ConfigError
from sim.llm.corpora import DEPARTMENTS, department_texts, write_department
from sim.llm.generic import generic_texts

SIGNATURES = {
    "cardiology": {"LVEF", "ECG:", "Trop", "BNP"},
    "oncology": {"ECOG", "ANC", "RECIST", "Toxicity:"},
    "radiology": {"FINDINGS:", "IMPRESSION:", "EXAM:", "INDICATION:"},
    "emergency": {"ESI", "GCS", "Triage", "Dispo:"},
}


def words(texts: list[str]) -> set[str]:
    """Words without digits (numbers are shared by every department)."""
    return {w for t in texts for w in t.split() if not re.search(r"\d", w)}


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_department_is_written_as_the_task_reads_it_with_the_same_bytes_each_time(
    tmp_path: Path,
) -> None:
    for where in ("a", "b"):
        write_department(
            tmp_path / where, "oncology", seed=3, train_docs=20, val_docs=5, context=64
        )
    first = files(tmp_path / "a")
    assert first == files(tmp_path / "b")
    assert sorted(first) == ["schema.json", "train.jsonl", "val.jsonl"]
    assert json.loads(first["schema.json"]) == {"task": "causal_lm_finetune", "context": 64}
    train = [json.loads(line)["text"] for line in first["train.jsonl"].decode().splitlines()]
    val = [json.loads(line)["text"] for line in first["val.jsonl"].decode().splitlines()]
    assert (len(train), len(val)) == (20, 5)
    assert train == department_texts("oncology", 20, seed=3)
    assert not set(train) & set(val)  # validation notes are drawn apart from training's
    write_department(tmp_path / "c", "oncology", seed=4, train_docs=20, val_docs=5, context=64)
    assert files(tmp_path / "c")["train.jsonl"] != first["train.jsonl"]


def test_departments_have_their_own_vocabularies() -> None:
    vocab = {d: words(department_texts(d, 300, seed=0)) for d in DEPARTMENTS}
    for d in DEPARTMENTS:
        assert SIGNATURES[d] <= vocab[d], d
        others = set().union(*(vocab[o] for o in DEPARTMENTS if o != d))
        assert not SIGNATURES[d] & others, d
        assert len(vocab[d] - others) >= 25, d
    for a, b in combinations(DEPARTMENTS, 2):
        jaccard = len(vocab[a] & vocab[b]) / len(vocab[a] | vocab[b])
        assert jaccard < 0.15, (a, b, jaccard)


def test_the_generic_text_names_no_department_term() -> None:
    generic = words(generic_texts(500, seed=0))
    assert len(generic) >= 60
    assert not generic & set().union(*SIGNATURES.values())
    assert generic_texts(50, seed=1) == generic_texts(50, seed=1)
    assert generic_texts(50, seed=1) != generic_texts(50, seed=2)


def test_an_unknown_department_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown department 'dermatology'; known: cardio"):
        department_texts("dermatology", 1, seed=0)
