"""A task's own model hooks replace Baton's defaults one by one; the rest stay Baton's."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.codec import state_of
from baton.ml.data import Schema, SiteData, Split
from baton.ml.hooks import task_hooks
from baton.ml.task import TABULAR, Metric
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection

SCHEMA = Schema(task="tabular", feature_names=("a", "b"), num_classes=2, class_names=("n", "y"))
PLAN = RunPlan(
    task=TaskSection(dataset="tabular"),
    model=ModelSection(name="logreg"),
    run=RunSection(name="hooks", sites=("h1",), cycles=1, seed=3),
)
SPLIT = Split(x=np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32), y=np.array([1, 0]))


class HeadOnly:
    """A task whose travelling state is the bias alone, scored by its own metric."""

    name = "tabular"
    primary_metric = Metric(name="margin", higher_is_better=True)

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        raise AssertionError("not read here")

    def build_model(self, plan: RunPlan, schema: Schema, site_dir: Path | None) -> nn.Module:
        assert site_dir == Path("/site")
        torch.manual_seed(plan.run.seed)
        return nn.Linear(schema.num_inputs, schema.num_classes)

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        with torch.no_grad():
            logits = model(torch.from_numpy(split.x))
        return {"margin": float(logits.max() - logits.min()), "num_examples": float(len(split))}

    def travelling_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"bias": state_of(model)["bias"]}

    def load_travelling(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], *, max_norm: float | None
    ) -> None:
        if set(state) != {"bias"}:
            raise ModelError("only the bias travels")
        model.load_state_dict({**state_of(model), **state})


def test_defaults_are_the_families_the_trainer_and_the_whole_state() -> None:
    hooks = task_hooks(TABULAR)
    model = hooks.build_model(PLAN, SCHEMA, None)
    assert not hooks.trains_itself
    assert set(hooks.travelling_state(model)) == set(model.state_dict())
    metrics = hooks.evaluate(model, SPLIT)
    assert set(metrics) == {"accuracy", "loss", "num_examples"}
    assert hooks.score(metrics) == metrics["accuracy"]


def test_a_tasks_own_hooks_replace_the_defaults_it_defines() -> None:
    hooks = task_hooks(HeadOnly())
    model = hooks.build_model(PLAN, SCHEMA, Path("/site"))
    assert isinstance(model, nn.Linear)
    assert list(hooks.travelling_state(model)) == ["bias"]
    hooks.load_travelling(model, {"bias": torch.tensor([5.0, -5.0])})
    assert torch.equal(model.bias.detach(), torch.tensor([5.0, -5.0]))
    with pytest.raises(ModelError, match="only the bias travels"):
        hooks.load_travelling(model, state_of(model))
    metrics = hooks.evaluate(model, SPLIT)
    assert hooks.score(metrics) == metrics["margin"] > 0
    # The training loop is still Baton's: it trains the task's own model.
    assert not hooks.trains_itself
    before = model.weight.detach().clone()
    result = hooks.train(model, SPLIT, TrainingSection(local_steps=3, batch_size=2), seed=1)
    assert result.steps == 3
    assert not torch.equal(before, model.weight.detach())
