"""A language-model hop trained by the site's parallel workers: DDP on LoRA adapters,
FSDP2 on every weight, each rank building the model on the site's own base checkpoint.

Real workers (forked, gloo on CPU), the site's own plan choice and job directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from baton.errors import PlanError
from baton.ml.data import Schema, SiteData
from baton.ml.hooks import TaskHooks, task_hooks
from baton.ml.task import load_task
from baton.ml.trainer import hop_seed
from site_node.config import SiteTraining
from site_node.local_training import site_plan, train_parallel
from site_node.parallel.plans import PlanKind
from tests.unit.baton.test_llm_fixtures import lm_plan, make_base, make_site


@pytest.fixture(scope="module")
def hooks() -> TaskHooks:
    return task_hooks(load_task("causal_lm_finetune"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make_base(tmp_path_factory.mktemp("lm") / "base")
    return make_site(tmp_path_factory.mktemp("sites") / "cardio", base)


@pytest.fixture(scope="module")
def local(hooks: TaskHooks, site: Path) -> tuple[Schema, SiteData]:
    return hooks.task.read_site_data(site)


def _hop(
    hooks: TaskHooks, site: Path, local: tuple[Schema, SiteData], tmp_path: Path, **args: object
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], float, float, PlanKind]:
    """One hop of ``args``'s model trained by two forked workers under the site's plan."""
    schema, data = local
    plan = hooks.training_plan(lm_plan(site / "base", dict(args), sites=2, steps=20))
    model = hooks.build_model(plan, schema, site)
    incoming = {k: v.clone() for k, v in model.state_dict().items()}
    kind = "fsdp" if args.get("mode") == "full" else "ddp"
    settings = SiteTraining(parallel_plan=kind, workers=2, launcher="fork")
    parallel = site_plan(settings, model, plan, num_examples=len(data.train))
    before = hooks.evaluate(model, data.val)["perplexity"]
    job_dir = tmp_path / "hop-00000.job"
    train_parallel(
        model,
        data.train,
        plan,
        parallel,
        launcher="fork",
        job_dir=job_dir,
        seed=hop_seed(plan.run.seed, 0),
        hop_index=0,
        num_sites=2,
    )
    assert not job_dir.exists()
    after = hooks.evaluate(model, data.val)["perplexity"]
    return model, incoming, before, after, parallel.kind


def test_a_ddp_lora_hop_lowers_perplexity_and_only_adapters_travel(
    hooks: TaskHooks, site: Path, local: tuple[Schema, SiteData], tmp_path: Path
) -> None:
    model, incoming, before, after, kind = _hop(hooks, site, local, tmp_path)
    assert kind == PlanKind.DDP
    assert after < 0.9 * before, (before, after)
    travelling = hooks.travelling_state(model)
    assert travelling
    assert all(".lora_A." in k or ".lora_B." in k for k in travelling)
    # The workers trained the adapters and left the frozen base as it came.
    state = model.state_dict()
    changed = {k for k, v in state.items() if not torch.equal(v, incoming[k])}
    assert changed == {k for k in travelling if ".lora_B." in k or ".lora_A." in k}


def test_an_fsdp_full_hop_trains_every_weight(
    hooks: TaskHooks, site: Path, local: tuple[Schema, SiteData], tmp_path: Path
) -> None:
    model, incoming, before, after, kind = _hop(hooks, site, local, tmp_path, mode="full")
    assert kind == PlanKind.FSDP
    assert after < 0.9 * before, (before, after)
    travelling = hooks.travelling_state(model)
    assert not any("lora_" in k for k in travelling)
    assert all(not torch.equal(v, incoming[k]) for k, v in travelling.items())
    lm: Any = model.lm  # Tied input and output embeddings came back as one tensor.
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight


def test_fsdp_on_adapters_is_refused(
    hooks: TaskHooks, site: Path, local: tuple[Schema, SiteData]
) -> None:
    plan = lm_plan(site / "base", sites=2)
    model = hooks.build_model(plan, local[0], site)
    settings = SiteTraining(parallel_plan="fsdp", workers=2, launcher="fork")
    with pytest.raises(PlanError, match="plan fsdp trains model 'hf_causal_lm' in mode 'full'"):
        site_plan(settings, model, plan, num_examples=len(local[1].train))
    assert not hooks.training_plan(plan).training.logit_adjustment
