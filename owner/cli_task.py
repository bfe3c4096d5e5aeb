"""``baton task`` commands: the installed tasks, and the pin of one for a plan's ``[task]``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.entry import exit_on_error, make_app
from baton.errors import BatonError, ConfigError

# The commands import the task registry when they run, so that ``baton --help`` stays fast.

console = Console(highlight=False)
_CODES: dict[type[BatonError], int] = {ConfigError: exit_codes.CLI_CONFIG}

task_app = make_app("The installed tasks, and pins of their code for run plans.")


@task_app.command("list")
def list_command() -> None:
    """List the installed tasks with the distribution and version that provide each."""
    from rich.table import Table

    from baton.ml.tasks import installed_tasks

    table = Table("task", "distribution", "version")
    for row in installed_tasks():
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


@task_app.command("hash")
def hash_command(
    name: Annotated[str, typer.Argument(help="An installed task (see 'baton task list').")],
) -> None:
    """Print the pin of an installed task's code: the plan's task section, ready to paste."""
    from baton.ml.tasks import task_pin

    with exit_on_error(_CODES, exit_codes.CLI_ERROR):
        pin = task_pin(name)
    typer.echo(pin.toml(), nl=False)


def register(app: typer.Typer) -> None:
    """Adds ``task list`` and ``task hash`` to the ``baton`` app."""
    app.add_typer(task_app, name="task")
