"""Checking a run plan's registered names (model, task, ordering strategy) against the
registries of whoever reads the plan."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from baton.errors import ConfigError

if TYPE_CHECKING:
    from baton.plan import RunPlan


def check_names(
    plan: RunPlan,
    *,
    source: str,
    models: Collection[str] | None = None,
    datasets: Collection[str] | None = None,
    strategies: Collection[str] | None = None,
) -> None:
    """Checks the plan's registered names against the registries its caller owns.

    The plan itself knows no registry: the coordinator passes the ordering strategies it
    can run, a site and the study owner's CLI pass the models and tasks installed with
    them. A registry left ``None`` is not checked.

    Raises:
        ConfigError: A name is not in the registry given for it; the message lists the
            known names.
    """
    for value, known, what, key in (
        (plan.model.name, models, "model", "model.name"),
        (plan.task.dataset, datasets, "dataset", "task.dataset"),
        (plan.ordering.strategy, strategies, "ordering strategy", "ordering.strategy"),
    ):
        if known is not None and value not in known:
            raise ConfigError(
                f"{source}: unknown {what} {value!r} in {key!r}; known: {', '.join(sorted(known))}"
            )
