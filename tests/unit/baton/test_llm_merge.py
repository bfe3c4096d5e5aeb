"""``baton merge``: a result's adapters folded into a checkpoint plain transformers loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
import torch
from typer.testing import CliRunner

from baton import exit_codes
from baton.errors import ConfigError, ModelError
from baton.ml.codec import save_state_file
from baton.ml.hooks import task_hooks
from baton.ml.llm.base import base_hash
from baton.ml.llm.merge import merge
from baton.ml.portable import result_metadata
from baton.ml.task import load_task
from tests.unit.baton.test_llm_fixtures import lm_plan, make_base, make_site

if TYPE_CHECKING:
    from torch import nn

    from baton.domain import Assignment
    from baton.ml.data import Split


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, nn.Module, Split]:
    """The base, a result file of a hop and the trained model it holds, validation data."""
    root = tmp_path_factory.mktemp("merge")
    base = make_base(root / "base")
    site = make_site(root / "site", base)
    hooks = task_hooks(load_task("causal_lm_finetune"))
    schema, data = hooks.task.read_site_data(site)
    plan = lm_plan(base, {"target_modules": ["q_proj", "v_proj", "down_proj"]}, steps=10)
    model = hooks.build_model(plan, schema, site)
    hooks.train(model, data.train, plan.training, seed=1)
    hop = cast("Assignment", SimpleNamespace(run_id="run-1", hop_index=0))
    result = root / "result.safetensors"
    meta = result_metadata(plan, schema, hop, "0" * 64)
    save_state_file(result, hooks.travelling_state(model), metadata=meta)
    return base, result, model, data.val


def test_merged_checkpoint_loads_in_plain_transformers_and_equals_base_plus_adapters(
    trained: tuple[Path, Path, nn.Module, Split], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, result, model, val = trained
    out = tmp_path / "merged"
    assert merge(result, base, out) == base_hash(base)
    merged = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    merged.train(False)
    tokens = torch.from_numpy(val.x[:4]).long()
    model.eval()
    with torch.no_grad():
        expected = model(tokens)
        got = merged(input_ids=tokens).logits.float()
    assert not any("lora" in k for k in merged.state_dict())
    assert (got - expected).abs().max().item() < 1e-4
    # The adapters changed the base: the comparison is not of the base with itself.
    plain = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    plain.train(False)
    with torch.no_grad():
        assert (plain(input_ids=tokens).logits - got).abs().max().item() > 1e-3
    assert len(AutoTokenizer.from_pretrained(str(out))) == len(
        AutoTokenizer.from_pretrained(str(base))
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged.")]


def test_merge_refuses_another_base_naming_both_hashes_and_an_existing_out(
    trained: tuple[Path, Path, nn.Module, Split], tmp_path: Path
) -> None:
    from owner.cli import app

    base, result, _, _ = trained
    other = shutil.copytree(base, tmp_path / "other")
    (other / "generation_config.json").write_text("{}", encoding="utf-8")
    args = ["merge", str(result), "--base", str(other), "--out", str(tmp_path / "out")]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == exit_codes.CLI_CONFIG, run.output
    text = " ".join(run.output.split())
    assert base_hash(other) in text
    assert base_hash(base) in text
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        merge(result, base, tmp_path / "taken")
    printed = CliRunner().invoke(app, ["base-hash", str(base)])
    assert printed.exit_code == 0
    assert printed.output.strip() == base_hash(base)


def test_merge_refuses_a_file_that_is_no_language_model_result(
    trained: tuple[Path, Path, nn.Module, Split], tmp_path: Path
) -> None:
    base = trained[0]
    plain = tmp_path / "plain.safetensors"
    save_state_file(plain, {"w": torch.zeros(2)})
    with pytest.raises(ModelError, match="no Baton result metadata"):
        merge(plain, base, tmp_path / "out")
