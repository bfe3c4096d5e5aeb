"""Submit-time check that a plan ranks by its installed task's primary metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton.errors import ConfigError

if TYPE_CHECKING:
    from baton.plan import TaskSection


def check_primary_metric(task: TaskSection, *, source: str) -> None:
    """Refuses a plan whose ``[task] metric``/``higher_is_better`` differ from the installed
    task's primary metric: the coordinator orders sites by them and reports show them.

    Args:
        task: The plan's ``[task]`` section; its task must be installed here.
        source: The plan file, for the message.

    Raises:
        ConfigError: They differ; the message gives the two lines to write under ``[task]``.
        DataError: The task is not installed here.
    """
    from baton.ml.task import load_task

    primary = load_task(task.dataset).primary_metric
    if (task.metric, task.higher_is_better) == (primary.name, primary.higher_is_better):
        return
    raise ConfigError(
        f"{source}: task {task.dataset!r} ranks models by {primary.name!r} "
        f"({_direction(primary.higher_is_better)}), but the plan's [task] says "
        f"{task.metric!r} ({_direction(task.higher_is_better)}); write these two lines "
        f'under [task]:\n    metric = "{primary.name}"\n'
        f"    higher_is_better = {'true' if primary.higher_is_better else 'false'}"
    )


def _direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"
