"""Department language models end to end: LoRA adapters fine-tuned across two department
site processes for one cycle lower each department's perplexity below the base's."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.plan import parse_plan
from sim.llm.base import cached_base
from sim.llm.federation import (
    LMRecipe,
    lm_plan_toml,
    provision_departments,
    read_departments,
    score_departments,
)
from tests.e2e.runs import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEPARTMENTS = ["cardiology", "radiology"]
RECIPE = LMRecipe(train_docs=60, val_docs=20, lr=5e-3, local_epochs=2)


def test_adapters_from_two_department_sites_lower_both_perplexities(tmp_path: Path) -> None:
    base = cached_base(seed=0)
    layout, pin = provision_departments(
        tmp_path / "fed", DEPARTMENTS, base=base, seed=0, recipe=RECIPE
    )
    plan_toml = lm_plan_toml(DEPARTMENTS, pin=pin, cycles=1, seed=0, recipe=RECIPE)

    outcome = run_to_the_end(layout, DEPARTMENTS, plan_toml)

    assert outcome.run.total_hops == 2
    assert all(code == 0 for code in outcome.exit_codes)
    # Only the adapters travelled: LoRA A and B of q_proj and v_proj in both layers.
    assert len(outcome.state) == 2 * 2 * 2
    assert all(".lora_A." in k or ".lora_B." in k for k in outcome.state)
    deps = read_departments(layout, DEPARTMENTS)
    scores = score_departments(deps, parse_plan(plan_toml), outcome.state, pooled=False)
    for department, s in scores.items():
        # The base never saw clinical notes (its perplexity on them is in the thousands);
        # one pass of adapters cuts it at least fourfold on both departments.
        assert s["final"] < 0.25 * s["base"], (department, s)
