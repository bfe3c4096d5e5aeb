"""Tiny pretrained bases and department sites for the ``causal_lm_finetune`` tests."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

import torch

from baton.ml.llm.base import base_hash
from baton.plan import RunPlan, parse_plan

_WORDS = {
    "generic": "the a patient was seen today and will return for follow up with the team",
    "cardio": "ecg shows sinus rhythm troponin negative chest pain bp stable echo ef normal",
}


def sentences(kind: str, n: int, *, seed: int) -> list[str]:
    """``n`` generated sentences of the word list ``kind`` (deterministic in ``seed``)."""
    rng = random.Random(seed)
    words = _WORDS[kind].split()
    out = []
    for _ in range(n):
        start = rng.randrange(len(words))
        out.append(" ".join(words[(start + k) % len(words)] for k in range(rng.randint(6, 12))))
    return out


def make_base(out: Path, *, hidden: int = 32, layers: int = 2, vocab: int = 160) -> Path:
    """A tiny random Llama and a BPE tokenizer trained on generated text, saved in ``out``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<eos>"])
    corpus = sentences("generic", 200, seed=1) + sentences("cardio", 200, seed=2)
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_site(site: Path, base: Path, *, kind: str = "cardio", context: int = 16) -> Path:
    """A department directory: schema, JSONL splits and a link to ``base``."""
    site.mkdir(parents=True)
    (site / "schema.json").write_text(
        json.dumps({"task": "causal_lm_finetune", "context": context}), encoding="utf-8"
    )
    for stem, seed, n in (("train", 10, 120), ("val", 11, 30)):
        lines = [json.dumps({"text": s}) for s in sentences(kind, n, seed=seed)]
        (site / f"{stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (site / "base").symlink_to(base.resolve(), target_is_directory=True)
    return site


def lm_plan(
    base: Path, args: Mapping[str, object] | None = None, *, sites: int = 1, steps: int = 0
) -> RunPlan:
    """A plan of one cycle over ``sites`` sites training ``hf_causal_lm`` on ``base`` (rank 4
    adapters unless ``args`` say otherwise), ``steps`` steps a hop (0: three epochs)."""
    return parse_plan(lm_plan_text(base, args, sites=sites, steps=steps), source="plan.toml")


def lm_plan_text(
    base: Path, args: Mapping[str, object] | None = None, *, sites: int = 1, steps: int = 0
) -> str:
    """The TOML text of :func:`lm_plan`; its sites are ``s0``, ``s1``..."""
    model_args = {"base_sha256": base_hash(base), "rank": 4, "alpha": 8, **(args or {})}
    names = ", ".join(f'"s{i}"' for i in range(sites))
    body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in model_args.items())
    text = f"""
[run]
name = "lm"
sites = [{names}]
cycles = 1
seed = 7

[task]
dataset = "causal_lm_finetune"
metric = "perplexity"
higher_is_better = false

[model]
name = "hf_causal_lm"
args = {{ {body} }}

[training]
optimizer = "adam"
lr = 0.01
batch_size = 8
local_epochs = 3
local_steps = {steps}
"""
    return text
