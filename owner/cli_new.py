"""``baton new`` commands: scaffold an installable task package whose tests pass as written."""

from __future__ import annotations

import keyword
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.entry import exit_on_error, make_app
from baton.errors import BatonError, ConfigError

# The templates are imported when the command runs, so that ``baton --help`` stays fast.

console = Console(highlight=False)
_CODES: dict[type[BatonError], int] = {ConfigError: exit_codes.CLI_CONFIG}

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
"""A task's name: lower-case letters and digits, single ``-`` or ``_`` between them."""
RESERVED = frozenset({"baton", "coordinator", "site_node", "owner", "sim", "ordering", "tests"})
"""Import names the new package must not take: Baton's own packages, and its tests."""

new_app = make_app("Start new things from templates: a task package.")


def package_name(name: str) -> str:
    """The import name of task ``name``'s package (``heart-risk``: ``heart_risk``).

    Raises:
        ConfigError: ``name`` is not a valid task name, or its package would shadow a
            Python keyword, a standard-library module or one of Baton's packages.
    """
    if not NAME_RE.match(name):
        raise ConfigError(
            f"task name {name!r} is not valid: use lower-case letters and digits, "
            "with single '-' or '_' between them, starting with a letter (e.g. 'heart-risk')"
        )
    pkg = name.replace("-", "_")
    if keyword.iskeyword(pkg) or pkg in sys.stdlib_module_names or pkg in RESERVED:
        raise ConfigError(
            f"task name {name!r} is taken: its package {pkg!r} would shadow a Python "
            "keyword, a standard module or Baton's own; choose another name"
        )
    return pkg


def scaffold_task(name: str, parent: Path) -> Path:
    """Writes the task package ``parent/name``; returns its directory.

    The package (see :mod:`owner.templates.task_package`) registers task ``name`` in the
    ``baton.tasks`` entry-point group and holds a task class, an example-data writer,
    tests that train it in Baton's simulator, and a README.

    Raises:
        ConfigError: ``name`` is not valid (:func:`package_name`), ``parent/name`` already
            exists, or a file cannot be written.
    """
    from string import Template

    from owner.templates.task_package import FILES

    pkg = package_name(name)
    target = parent / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
    except FileExistsError:
        raise ConfigError(
            f"{target}: already exists; remove it or choose another name or --dir"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot create it ({exc.strerror})") from None
    values = {"name": name, "pkg": pkg, "cls": _class_name(pkg)}
    for path, template in FILES.items():
        out = target / Template(path).substitute(values)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(Template(template).substitute(values), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{out}: cannot write it ({exc.strerror})") from None
    return target


def _class_name(pkg: str) -> str:
    """``heart_risk``: ``HeartRiskTask``."""
    return "".join(part.capitalize() for part in pkg.split("_")) + "Task"


@new_app.command("task")
def task_command(
    name: Annotated[str, typer.Argument(help="The task's name: lower case, '-' or '_' allowed.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the package's directory.")
    ] = Path("."),
) -> None:
    """Create an installable task package NAME/ whose tests pass as written."""
    with exit_on_error(_CODES, exit_codes.CLI_ERROR):
        target = scaffold_task(name, directory)
    console.print(f"created {escape(str(target))}; next:")
    console.print(f"  cd {escape(str(target))} && pip install -e . && python -m pytest")
    console.print(escape(f"  baton task hash {name}   # the pin for a plan's [task]"))


def register(app: typer.Typer) -> None:
    """Adds ``new task`` to the ``baton`` app."""
    app.add_typer(new_app, name="new")
