"""The tasks installed with this environment, found through the ``baton.tasks`` entry points.

A task is what a plan's ``task.dataset`` names. Packages register theirs in the
``baton.tasks`` entry-point group (the simulations register the toy tasks this way); this
module lists their names without importing them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

TASKS_GROUP = "baton.tasks"
"""Entry-point group under which packages register tasks."""


def known_tasks() -> tuple[str, ...]:
    """Names of the installed tasks, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=TASKS_GROUP)}))
