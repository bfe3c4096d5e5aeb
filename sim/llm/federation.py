"""A local federation of department sites for ``causal_lm_finetune``, its plan and its scores.

:func:`provision_departments` gives each department site the PKI of
:func:`sim.localfed.provision_pki`, its own synthetic notes (:mod:`sim.llm.corpora`) and its
own copy of the base checkpoint (:mod:`sim.llm.base`). :func:`lm_plan_toml` writes the plan
a study owner would sign, pinning that base by hash. :func:`score_departments` scores the
base, a fetched result and pooled (centralized) fine-tuning on each department's
validation notes, in process, through the task's own hooks.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from baton.ml.codec import encode_state
from baton.ml.data import Schema, SiteData, Split
from baton.ml.hooks import TaskHooks, task_hooks
from baton.ml.llm.base import BASE_DIR, base_hash
from baton.ml.task import load_task
from baton.plan import RunPlan
from sim.llm.base import MANIFEST
from sim.llm.corpora import write_department
from sim.localfed import LocalFederationLayout, provision_pki

__all__ = [
    "TASK",
    "Departments",
    "LMRecipe",
    "full_model_bytes",
    "lm_plan_toml",
    "provision_departments",
    "read_departments",
    "score_departments",
]

TASK = "causal_lm_finetune"
"""The task the department sites hold data for."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LMRecipe:
    """How much text each department holds and how the plan fine-tunes on it."""

    train_docs: int = 100
    """Training notes per department."""
    val_docs: int = 30
    """Validation notes per department."""
    context: int = 64
    """Tokens per training window (the sites' schema)."""
    rank: int = 4
    """LoRA rank."""
    alpha: int = 8
    """LoRA alpha."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """The base's linear layers that get adapters."""
    lr: float = 5e-3
    """Adam's learning rate."""
    batch_size: int = 16
    """Windows per optimizer step."""
    local_epochs: int = 2
    """Passes over a department's notes per hop."""


def provision_departments(
    root: Path, departments: Sequence[str], *, base: Path, seed: int, recipe: LMRecipe
) -> tuple[LocalFederationLayout, str]:
    """PKI, configs, notes and a copy of ``base`` for one site per department.

    Returns:
        The layout (site ids are the department names) and the base's pin
        (:func:`baton.ml.llm.base.base_hash` of the copy every site holds).
    """
    layout = provision_pki(root, departments)
    for department in departments:
        data_dir = layout.site_dir(department) / "data"
        write_department(
            data_dir,
            department,
            seed=seed,
            train_docs=recipe.train_docs,
            val_docs=recipe.val_docs,
            context=recipe.context,
        )
        shutil.copytree(base, data_dir / BASE_DIR, ignore=shutil.ignore_patterns(MANIFEST))
    return layout, base_hash(layout.site_dir(departments[0]) / "data" / BASE_DIR)


def lm_plan_toml(
    departments: Sequence[str], *, pin: str, cycles: int, seed: int, recipe: LMRecipe
) -> str:
    """The plan: LoRA on the pinned base, ``cycles`` passes over the departments in order."""
    modules = json.dumps(list(recipe.target_modules))
    return f"""\
[run]
name = "department-llm"
seed = {seed}
cycles = {cycles}
sites = {json.dumps(list(departments))}

[model]
name = "hf_causal_lm"
args = {{ base_sha256 = "{pin}", mode = "lora", rank = {recipe.rank}, \
alpha = {recipe.alpha}, dropout = 0.0, target_modules = {modules} }}

[task]
dataset = "{TASK}"
metric = "perplexity"
higher_is_better = false

[ordering]
strategy = "fixed"

[training]
optimizer = "adam"
lr = {recipe.lr}
batch_size = {recipe.batch_size}
local_epochs = {recipe.local_epochs}
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Departments:
    """Every department's data as its site reads it, and one site directory for the base."""

    schema: Schema
    data: dict[str, SiteData]
    site_dir: Path
    hooks: TaskHooks


def read_departments(layout: LocalFederationLayout, departments: Sequence[str]) -> Departments:
    """Reads each department's notes with the installed task, as its site does."""
    task = load_task(TASK)
    data: dict[str, SiteData] = {}
    schema: Schema | None = None
    for department in departments:
        schema, data[department] = task.read_site_data(layout.site_dir(department) / "data")
    assert schema is not None
    return Departments(
        schema=schema,
        data=data,
        site_dir=layout.site_dir(departments[0]) / "data",
        hooks=task_hooks(task),
    )


def score_departments(
    deps: Departments,
    plan: RunPlan,
    result: Mapping[str, torch.Tensor],
    *,
    pooled: bool = True,
) -> dict[str, dict[str, float]]:
    """Perplexity of the base, of ``result`` (the fetched adapters) and of pooled
    fine-tuning on each department's validation notes.

    Pooled fine-tuning trains the plan's model once on every department's training windows
    together for ``cycles * local_epochs`` epochs: the same windows, the same steps, the
    same optimizer as the sequential run, without the departments' separation.

    Returns:
        Per department: ``base``, ``final`` and (with ``pooled``) ``pooled`` perplexities.
    """
    hooks = deps.hooks
    model = hooks.build_model(plan, deps.schema, deps.site_dir)
    scores = {d: {"base": _ppl(hooks, model, s.val)} for d, s in deps.data.items()}
    hooks.load_travelling(model, result, max_norm=None)
    for d, s in deps.data.items():
        scores[d]["final"] = _ppl(hooks, model, s.val)
    if pooled:
        central = hooks.build_model(plan, deps.schema, deps.site_dir)
        train = [s.train for s in deps.data.values()]
        both = Split(x=np.concatenate([t.x for t in train]), y=np.concatenate([t.y for t in train]))
        epochs = plan.run.cycles * plan.training.local_epochs
        training = dataclasses.replace(plan.training, local_epochs=epochs)
        hooks.train(central, both, training, seed=plan.run.seed)
        for d, s in deps.data.items():
            scores[d]["pooled"] = _ppl(hooks, central, s.val)
    return scores


def full_model_bytes(deps: Departments, plan: RunPlan) -> int:
    """Bytes of a full-model hop's plaintext: every weight of the plan's model in ``full``
    mode, as safetensors."""
    args = {k: v for k, v in plan.model.args.items() if k == "base_sha256"}
    model_section = dataclasses.replace(plan.model, args={**args, "mode": "full"})
    full = dataclasses.replace(plan, model=model_section)
    model = deps.hooks.build_model(full, deps.schema, deps.site_dir)
    return len(encode_state(deps.hooks.travelling_state(model)))


def _ppl(hooks: TaskHooks, model: torch.nn.Module, split: Split) -> float:
    with torch.no_grad():
        return float(hooks.evaluate(model, split)["perplexity"])
