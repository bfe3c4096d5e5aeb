"""What a task may do to its model beyond reading data: the optional hooks and their defaults.

A task (:class:`baton.ml.task.Task`) must read its sites' data and name its primary metric.
It MAY also build its own model, adjust the plan's training policy or train the model
itself, evaluate it and choose which of its tensors travel between sites, by defining the
methods of :class:`ModelHooks` (all or some of them). :func:`task_hooks` binds a task to
the hooks it defines and the defaults for the rest: the plan's ``[model]`` from the model
families, its training policy as it is, the one training loop of :mod:`baton.ml.trainer`,
classification metrics, and the whole state dict travelling.

Every path that trains or scores a model goes through :class:`TaskHooks`: the site's hop,
the simulator, the lab's oracle and the demo's reports, so a task's own model and metrics
are the ones everything uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from baton.ml.codec import load_into, state_of
from baton.ml.models import plan_model
from baton.ml.trainer import ProgressFn, TrainResult, evaluate, train_local

if TYPE_CHECKING:
    from baton.ml.data import Schema, Split
    from baton.ml.task import Task
    from baton.plan import RunPlan, TrainingSection

__all__ = ["ModelHooks", "TaskHooks", "task_hooks"]


class ModelHooks(Protocol):
    """The optional methods of a task; a task defines those it needs.

    Constraints: ``build_model`` MUST be deterministic given the plan (every site builds
    hop 0's model and checks incoming tensors against it); ``travelling_state`` MUST return
    the same keys, shapes and dtypes at every site; ``evaluate`` MUST return the task's
    primary metric under its name, and ``num_examples``.
    """

    def build_model(self, plan: RunPlan, schema: Schema, site_dir: Path | None) -> nn.Module:
        """The model the plan names, its weights drawn from ``plan.run.seed``.

        ``site_dir`` is the site's data directory, for what a site holds besides its data
        (a pretrained base checkpoint); None where no site is involved (the owner's
        checks, the simulator's in-memory data).
        """
        ...

    def training_policy(self, training: TrainingSection) -> TrainingSection:
        """The plan's training policy as the task trains with it (a language model turns
        logit adjustment off). Unlike :meth:`train`, it keeps Baton's loop, so the site's
        parallel plans still apply."""
        ...

    def train(
        self,
        model: nn.Module,
        split: Split,
        training: TrainingSection,
        *,
        seed: int,
        hop_index: int,
        num_sites: int,
        progress: ProgressFn | None,
    ) -> TrainResult:
        """Trains ``model`` in place on a site's training split, deterministic in ``seed``."""
        ...

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        """Named metrics of ``model`` on ``split``, without gradients."""
        ...

    def travelling_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors that leave the site sealed (all of them, or adapters only)."""
        ...

    def load_travelling(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], *, max_norm: float | None
    ) -> None:
        """Loads tensors of :meth:`travelling_state` into ``model``; refuses any other
        key, shape or dtype, and any tensor whose norm exceeds ``max_norm`` (None: no bound).

        Raises:
            ModelError: The tensors do not fit the model.
        """
        ...


@dataclass(frozen=True, slots=True)
class TaskHooks:
    """A task bound to its own hooks, with Baton's defaults for the ones it leaves out."""

    task: Task

    def _own(self, hook: str) -> Any:
        return getattr(self.task, hook, None)

    @property
    def trains_itself(self) -> bool:
        """Whether the task runs its own training loop (the site's parallel plans then do
        not apply: they spread Baton's loop)."""
        return self._own("train") is not None

    def build_model(self, plan: RunPlan, schema: Schema, site_dir: Path | None) -> nn.Module:
        own = self._own("build_model")
        if own is not None:
            model: nn.Module = own(plan, schema, site_dir)
            return model
        return plan_model(plan, schema)

    def training_policy(self, training: TrainingSection) -> TrainingSection:
        """The task's :meth:`ModelHooks.training_policy` of ``training``, or ``training``."""
        own = self._own("training_policy")
        if own is None:
            return training
        policy: TrainingSection = own(training)
        return policy

    def training_plan(self, plan: RunPlan) -> RunPlan:
        """``plan`` with its training policy as the task trains with it (for the site's
        parallel workers, which read the policy from the plan)."""
        return replace(plan, training=self.training_policy(plan.training))

    def train(
        self,
        model: nn.Module,
        split: Split,
        training: TrainingSection,
        *,
        seed: int,
        hop_index: int = 0,
        num_sites: int = 1,
        progress: ProgressFn | None = None,
    ) -> TrainResult:
        own = self._own("train") or train_local
        result: TrainResult = own(
            model,
            split,
            self.training_policy(training),
            seed=seed,
            hop_index=hop_index,
            num_sites=num_sites,
            progress=progress,
        )
        return result

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        own = self._own("evaluate") or evaluate
        metrics: dict[str, float] = own(model, split)
        return metrics

    def travelling_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        own = self._own("travelling_state") or state_of
        state: dict[str, torch.Tensor] = own(model)
        return state

    def load_travelling(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], *, max_norm: float | None = None
    ) -> None:
        own = self._own("load_travelling")
        if own is not None:
            own(model, state, max_norm=max_norm)
        else:
            load_into(model, state, max_norm=max_norm)

    def score(self, metrics: Mapping[str, float]) -> float | None:
        """The task's primary metric in ``metrics``, or None when absent."""
        value = metrics.get(self.task.primary_metric.name)
        return None if value is None else float(value)


def task_hooks(task: Task) -> TaskHooks:
    """``task`` with its own hooks and the defaults (see the module's docstring)."""
    return TaskHooks(task)
