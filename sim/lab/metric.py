"""What the lab's trainers score runs by, and the refusal of a plan ranked by another metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton.errors import ConfigError

if TYPE_CHECKING:
    from baton.plan import RunPlan

SCORED = ("accuracy", True)
"""The metric (and direction: higher is better) that the batched trainer, the oracle and
the baselines score runs by: they train and evaluate classifiers."""


def direction(higher_is_better: bool) -> str:
    """``higher is better`` or ``lower is better``."""
    return "higher is better" if higher_is_better else "lower is better"


def unscored_metric(plan: RunPlan) -> str | None:
    """The phrase naming ``plan``'s primary metric when the lab cannot score runs by it
    (``primary metric 'perplexity', lower is better (only 'accuracy')``); None when it can."""
    if (plan.task.metric, plan.task.higher_is_better) == SCORED:
        return None
    return (
        f"primary metric {plan.task.metric!r}, {direction(plan.task.higher_is_better)} "
        f"(only {SCORED[0]!r}, {direction(SCORED[1])})"
    )


def require_scored_metric(plan: RunPlan, what: str) -> None:
    """Refuses ``plan`` where ``what`` would rank its runs by a metric other than its own.

    Raises:
        ConfigError: The plan's primary metric is not the one ``what`` computes; rather
            than rank runs by accuracy where the plan ranks by, say, perplexity.
    """
    phrase = unscored_metric(plan)
    if phrase is not None:
        raise ConfigError(
            f"{what} scores runs by {SCORED[0]!r} only; it cannot rank the runs of a plan "
            f"whose {phrase}: use 'baton simulate' to train this plan"
        )
