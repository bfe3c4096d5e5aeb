"""The base checkpoint's pin and loading, the site's text reader, and the plan's arguments."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from baton.errors import ConfigError, DataError, ModelError
from baton.ml.data import Schema
from baton.ml.llm.args import lm_args
from baton.ml.llm.base import base_hash, load_base
from baton.ml.llm.data import TASK, base_dir, read_lm_site
from baton.ml.validate import check_model
from baton.plan import ModelSection
from tests.unit.baton.test_llm_fixtures import lm_plan, make_base, make_site

PIN = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base(tmp_path_factory.mktemp("lm") / "base")


def test_base_hash_is_stable_and_ignores_where_the_base_sits(base: Path, tmp_path: Path) -> None:
    digest = base_hash(base)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    copy = shutil.copytree(base, tmp_path / "elsewhere")
    link = tmp_path / "link"
    link.symlink_to(base, target_is_directory=True)
    assert base_hash(base) == base_hash(copy) == base_hash(link) == digest


@pytest.mark.parametrize("change", ["byte", "rename", "add", "remove"])
def test_base_hash_changes_with_any_file(base: Path, tmp_path: Path, change: str) -> None:
    copy = shutil.copytree(base, tmp_path / "copy")
    weights = copy / "model.safetensors"
    if change == "byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    elif change == "rename":
        (copy / "tokenizer_config.json").rename(copy / "tokenizer_config.json.bak")
    elif change == "add":
        (copy / "notes.txt").write_text("x", encoding="utf-8")
    else:
        (copy / "generation_config.json").unlink()
    assert base_hash(copy) != base_hash(base)


def test_base_hash_refuses_a_link_leading_out_and_a_missing_directory(
    base: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(base, tmp_path / "copy")
    (tmp_path / "secret").write_text("x", encoding="utf-8")
    (copy / "extra").symlink_to(tmp_path / "secret")
    with pytest.raises(DataError, match="leads outside the base checkpoint"):
        base_hash(copy)
    with pytest.raises(DataError, match="base checkpoint directory not found"):
        base_hash(tmp_path / "nothing")


def test_load_base_names_what_is_wrong(base: Path, tmp_path: Path) -> None:
    import torch

    with pytest.raises(DataError, match=r"config\.json not found"):
        load_base(tmp_path, dtype=torch.float32)
    copy = shutil.copytree(base, tmp_path / "copy")
    (copy / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ModelError, match="the base checkpoint does not load"):
        load_base(copy, dtype=torch.float32)


def test_a_base_in_pickle_format_is_refused_unread(base: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    copy = shutil.copytree(base, tmp_path / "pickled")
    model = AutoModelForCausalLM.from_pretrained(str(copy), local_files_only=True)
    (copy / "model.safetensors").unlink()
    torch.save(model.state_dict(), copy / "pytorch_model.bin")  # a pickle, never to be read
    with pytest.raises(ModelError, match="the base checkpoint does not load"):
        load_base(copy, dtype=torch.float32)


def test_site_text_becomes_windows_and_the_schema_follows_the_vocabulary(
    base: Path, tmp_path: Path
) -> None:
    site = make_site(tmp_path / "site", base, context=16)
    schema, data = read_lm_site(site)
    assert (schema.task, len(schema.feature_names), data.train.x.shape[1]) == (TASK, 16, 16)
    assert len(data.train) > 20
    # The vocabulary is named by its digest: every hop's metadata carries the schema, and
    # the next site parses it back to the same hash.
    assert schema.class_names == ()
    assert schema.num_classes > 100
    assert len(schema.to_json()) < 400
    assert Schema.from_json(schema.to_json(), source="meta").schema_hash() == schema.schema_hash()
    assert len(data.val) > 2
    # y is the token after the window: the next window's first token.
    assert (data.train.y[:-1] == data.train.x[1:, 0].astype("int64")).all()
    tok = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    other = shutil.copytree(base, tmp_path / "other")
    # Two tokens swap ids: same strings, same merges, another vocabulary.
    swap = {5: 6, 6: 5}
    tok["model"]["vocab"] = {k: swap.get(v, v) for k, v in tok["model"]["vocab"].items()}
    (other / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    (site / "base").unlink()
    (site / "base").symlink_to(other, target_is_directory=True)
    assert read_lm_site(site)[0].schema_hash() != schema.schema_hash()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"schema.json": '{"task": "causal_lm_finetune", "context": 1}'}, "'context' must be"),
        ({"schema.json": '{"task": "causal_lm_finetune", "context": 8, "x": 1}'}, "'x' is unknown"),
        ({"schema.json": '{"task": "causal_lm_finetune", "context": 8, "base": "../b"}'}, "'base'"),
        ({"train.jsonl": '{"text": "a b"}\nnot json\n'}, "train.jsonl: line 2 is not JSON"),
        ({"val.jsonl": '{"txt": "a"}\n'}, "val.jsonl: line 1 is not an object with a string"),
        (
            {"val.jsonl": '{"text": "a"}\n'},
            "val.jsonl: 2 tokens, fewer than one window of 16 and the next",
        ),
        ({"train.txt": "a b c\n\nd e f\n"}, "holds both"),
    ],
)
def test_bad_site_data_is_refused_by_name(
    base: Path, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    site = make_site(tmp_path / "site", base, context=16)
    for name, text in files.items():
        (site / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_lm_site(site)


def test_plain_text_documents_read_as_jsonl_does(base: Path, tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", base, context=16)
    _, from_jsonl = read_lm_site(site)
    for stem in ("train", "val"):
        lines = (site / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()
        (site / f"{stem}.jsonl").unlink()
        docs = "\n\n".join(json.loads(line)["text"] for line in lines)
        (site / f"{stem}.txt").write_text(docs, encoding="utf-8")
    _, from_text = read_lm_site(site)
    assert from_text.train.x.tobytes() == from_jsonl.train.x.tobytes()
    assert from_text.val.y.tobytes() == from_jsonl.val.y.tobytes()


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"base_sha256": "abc"}, "base_sha256", "'sha256:' and 64"),
        ({"base_sha256": PIN, "mode": "half"}, "mode", "lora, full"),
        ({"base_sha256": PIN, "rank": 0}, "rank", "integer in \\[1, 4096\\]"),
        ({"base_sha256": PIN, "alpha": 1.5}, "alpha", "integer"),
        ({"base_sha256": PIN, "dropout": 1.0}, "dropout", "\\[0, 1\\)"),
        ({"base_sha256": PIN, "target_modules": []}, "target_modules", "non-empty list"),
        ({"base_sha256": PIN, "mode": "full", "base_dtype": "bfloat16"}, "base_dtype", "frozen"),
        ({"base_sha256": PIN, "depth": 3}, "depth", "unknown argument 'depth'"),
    ],
)
def test_submit_checks_the_arguments_without_a_checkpoint(
    base: Path, args: dict[str, object], key: str, message: str
) -> None:
    plan = replace(lm_plan(base), model=ModelSection(name="hf_causal_lm", args=args))
    with pytest.raises(ConfigError, match=f"p.toml: 'model.args.{key}': .*{message}"):
        check_model(plan, source="p.toml")
    with pytest.raises(ModelError, match=message):
        lm_args(args)


def test_submit_accepts_a_good_plan_and_refuses_plans_that_split_tensors(base: Path) -> None:
    plan = lm_plan(base)
    check_model(plan, source="p.toml")
    assert lm_args(plan.model.args).target_modules == ("q_proj", "v_proj")
    ddp = replace(plan, training=replace(plan.training, parallel_plan="ddp"))
    check_model(ddp, source="p.toml")
    tp = replace(plan, training=replace(plan.training, parallel_plan="tp"))
    with pytest.raises(ConfigError, match="'hf_causal_lm' cannot be trained under it"):
        check_model(tp, source="p.toml")


def test_the_schema_may_name_where_the_base_is(base: Path, tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", base, context=16)
    (site / "base").rename(site / "elsewhere")
    schema = {"task": "causal_lm_finetune", "context": 16, "base": "elsewhere"}
    (site / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    assert base_dir(site) == site / "elsewhere"
    assert len(read_lm_site(site)[1].train) > 20
    assert base_dir(tmp_path) == tmp_path / "base"  # no schema: a simulation's model directory
