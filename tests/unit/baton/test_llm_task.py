"""Task ``causal_lm_finetune`` through its hooks: the pin, what travels, a hop, determinism."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from baton.errors import DataError, ModelError
from baton.ml.codec import decode_state, encode_state
from baton.ml.data import Schema, SiteData
from baton.ml.hooks import TaskHooks, task_hooks
from baton.ml.llm.args import lm_args
from baton.ml.llm.model import adapt
from baton.ml.task import load_task
from baton.ml.trainer import hop_seed
from tests.unit.baton.test_llm_fixtures import lm_plan, make_base, make_site


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base(tmp_path_factory.mktemp("lm") / "base")


@pytest.fixture(scope="module")
def site(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("sites") / "cardio", base)


@pytest.fixture(scope="module")
def hooks() -> TaskHooks:
    task = load_task("causal_lm_finetune")
    assert (task.primary_metric.name, task.primary_metric.higher_is_better) == (
        "perplexity",
        False,
    )
    return task_hooks(task)


@pytest.fixture(scope="module")
def local(hooks: TaskHooks, site: Path) -> tuple[Schema, SiteData]:
    return hooks.task.read_site_data(site)


def test_a_site_with_another_base_refuses_naming_both_hashes(
    hooks: TaskHooks, base: Path, local: tuple[Schema, SiteData], tmp_path: Path
) -> None:
    other = shutil.copytree(base, tmp_path / "other")
    (other / "generation_config.json").write_text("{}", encoding="utf-8")
    site = make_site(tmp_path / "site", other)
    plan = lm_plan(base)
    pinned = plan.model.args["base_sha256"]
    from baton.ml.llm.base import base_hash

    with pytest.raises(DataError) as caught:
        hooks.build_model(plan, local[0], site)
    assert pinned in caught.value.message
    assert base_hash(other) in caught.value.message


def test_only_adapters_travel_and_they_are_a_small_part_of_the_model() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=2000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    full = LlamaForCausalLM(config)
    full_bytes = len(encode_state(full.state_dict()))
    args = lm_args({"base_sha256": "sha256:" + "0" * 64, "rank": 8})
    model = adapt(full, args, seed=0)
    travelling = load_task("causal_lm_finetune").travelling_state(model)  # type: ignore[attr-defined]
    assert travelling
    assert all(".lora_A." in k or ".lora_B." in k for k in travelling)
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in travelling} == {"q_proj", "v_proj"}
    hop_bytes = len(encode_state(travelling))
    assert hop_bytes < 0.05 * full_bytes, (hop_bytes, full_bytes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"rank": 2}, "the adapters have rank 2, but the plan's model has rank 4"),
        (
            {"target_modules": ["k_proj", "q_proj"]},
            "adapt modules k_proj, q_proj, but the plan's model adapts q_proj, v_proj",
        ),
    ],
)
def test_adapters_of_another_rank_or_modules_are_refused(
    hooks: TaskHooks,
    base: Path,
    site: Path,
    local: tuple[Schema, SiteData],
    args: dict[str, object],
    message: str,
) -> None:
    theirs = hooks.build_model(lm_plan(base, args), local[0], site)
    mine = hooks.build_model(lm_plan(base), local[0], site)
    with pytest.raises(ModelError, match=message):
        hooks.load_travelling(mine, hooks.travelling_state(theirs))


def test_non_finite_or_too_large_adapters_are_refused(
    hooks: TaskHooks, base: Path, site: Path, local: tuple[Schema, SiteData]
) -> None:
    model = hooks.build_model(lm_plan(base), local[0], site)
    state = hooks.travelling_state(model)
    name = next(iter(state))
    with pytest.raises(ModelError, match="above the plan's bound"):
        hooks.load_travelling(model, {k: v + 10.0 for k, v in state.items()}, max_norm=1.0)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    with pytest.raises(ModelError, match=f"tensor {name!r} holds non-finite values"):
        hooks.load_travelling(model, state)
    with pytest.raises(ModelError, match=r"dtype torch\.float64"):
        hooks.load_travelling(model, {k: v.double() for k, v in state.items()})


def test_one_hop_lowers_perplexity_and_the_next_site_gets_the_same_model(
    hooks: TaskHooks, base: Path, site: Path, local: tuple[Schema, SiteData]
) -> None:
    schema, data = local
    plan = lm_plan(base, sites=2, steps=20)
    model = hooks.build_model(plan, schema, site)
    before = hooks.evaluate(model, data.val)
    calls: list[int] = []
    result = hooks.train(
        model,
        data.train,
        plan.training,
        seed=hop_seed(plan.run.seed, 0),
        num_sites=2,
        progress=lambda step, total, loss: calls.append(step),
    )
    after = hooks.evaluate(model, data.val)
    assert after["perplexity"] < 0.9 * before["perplexity"], (before, after)
    assert after["perplexity"] == pytest.approx(torch.tensor(after["loss"]).exp().item())
    assert after["tokens_per_s"] > 0
    assert after["num_examples"] == len(data.val)
    assert calls[-1] == result.steps
    # The hop's output, as the next site opens it: the same scores.
    blob = encode_state(hooks.travelling_state(model))
    nxt = hooks.build_model(plan, schema, site)
    hooks.load_travelling(nxt, decode_state(blob))
    assert hooks.evaluate(nxt, data.val)["loss"] == pytest.approx(after["loss"], abs=1e-6)


def test_training_is_deterministic_given_the_seed(
    hooks: TaskHooks, base: Path, site: Path, local: tuple[Schema, SiteData]
) -> None:
    schema, data = local
    plan = lm_plan(base, {"dropout": 0.1}, steps=4)
    blobs = []
    for seed in (3, 3, 4):
        model = hooks.build_model(plan, schema, site)
        hooks.train(model, data.train, plan.training, seed=seed)
        blobs.append(encode_state(hooks.travelling_state(model)))
    assert blobs[0] == blobs[1]
    assert blobs[0] != blobs[2]


def test_full_mode_trains_and_sends_every_weight(
    hooks: TaskHooks, base: Path, site: Path, local: tuple[Schema, SiteData]
) -> None:
    model = hooks.build_model(lm_plan(base, {"mode": "full"}), local[0], site)
    state = hooks.travelling_state(model)
    assert sum(t.numel() for t in state.values()) == sum(p.numel() for p in model.parameters())
    assert not any("lora_" in k for k in state)
    # Tied input and output embeddings travel once and load as one.
    moved = {k: v + 0.01 for k, v in state.items()}
    other = hooks.build_model(lm_plan(base, {"mode": "full"}), local[0], site)
    hooks.load_travelling(other, moved)
    assert all(torch.equal(v, moved[k]) for k, v in hooks.travelling_state(other).items())
    lm: Any = other.lm
    assert torch.equal(lm.get_output_embeddings().weight, lm.get_input_embeddings().weight)


def test_a_bfloat16_base_stays_frozen_and_its_adapters_travel_in_float32(
    hooks: TaskHooks, base: Path, site: Path, local: tuple[Schema, SiteData]
) -> None:
    model = hooks.build_model(lm_plan(base, {"base_dtype": "bfloat16"}), local[0], site)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    state = hooks.travelling_state(model)
    assert frozen == {torch.bfloat16}
    assert {t.dtype for t in state.values()} == {torch.float32}
    before = hooks.evaluate(model, local[1].val)
    assert before["loss"] > 0
    plain = hooks.build_model(lm_plan(base), local[0], site)
    assert set(hooks.travelling_state(plain)) == set(state)
