"""The task API: what a site trains, declared by an installed package.

A task says how a site reads its own data (its schema, its train and validation splits)
and which metric ranks models (its primary metric and whether higher is better). Tasks are
objects that satisfy :class:`Task`, registered by installed packages in the ``baton.tasks``
entry-point group (``name = "package.module:OBJECT"``); Baton's own (``tabular``,
``tokens``) are registered the same way, with no special path. The coordinator never sends
task code: a site runs the tasks its operator installed, and a plan may pin their exact
code (:mod:`baton.ml.tasks`).

The model comes from the plan's ``[model]`` section and the model families
(:mod:`baton.ml.families`), sized by the task's schema; loss and metrics are the
classification ones of the one training loop (:mod:`baton.ml.trainer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE, Schema, SiteData, read_site_data

__all__ = ["TABULAR", "TOKENS", "Metric", "ReaderTask", "Task", "load_task", "site_task"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    """A metric the training loop reports, and which way is better."""

    name: str
    """Key in the metrics a hop reports (e.g. ``accuracy``, ``loss``)."""
    higher_is_better: bool


@runtime_checkable
class Task(Protocol):
    """What a task package provides.

    Constraints: ``read_site_data`` MUST read only ``site_dir``, MUST validate what it reads
    and raise :class:`~baton.errors.DataError` with a message that names files, lines,
    columns and counts but never a value, and MUST return a schema whose ``task`` is
    ``name``.
    """

    @property
    def name(self) -> str:
        """The name plans use (``[task] dataset``) and the entry point's name."""
        ...

    @property
    def primary_metric(self) -> Metric:
        """The metric that ranks models: what ordering strategies and reports use."""
        ...

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        """Reads and validates one site's data from ``site_dir``."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ReaderTask:
    """A task whose sites hold their table as Baton's readers read it
    (:func:`baton.ml.data.read_site_data`: ``schema.json`` beside CSV or Parquet splits)."""

    name: str
    primary_metric: Metric = Metric(name="accuracy", higher_is_better=True)

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        schema, data = read_site_data(site_dir)
        if schema.task != self.name:
            raise DataError(
                f"{site_dir / SCHEMA_FILE}: the schema is for task {schema.task!r}, "
                f"not {self.name!r}"
            )
        return schema, data


TABULAR = ReaderTask(name="tabular")
"""A hospital's own table: typed features (numeric, categorical), a label column, CSV or
Parquet, missing values imputed or refused as its schema declares; ``mlp`` or ``logreg``."""
TOKENS = ReaderTask(name="tokens")
"""Windows of token ids and the token that follows; ``causal_lm``."""


def load_task(name: str) -> Task:
    """The installed task ``name``, loaded from its entry point.

    Raises:
        DataError: No installed package registers ``name``, or what it registers is not
            a :class:`Task`.
    """
    found = [ep for ep in entry_points(group="baton.tasks") if ep.name == name]
    if not found:
        known = sorted({ep.name for ep in entry_points(group="baton.tasks")})
        raise DataError(
            f"task {name!r} is not installed here; installed: {', '.join(known) or 'none'}"
        )
    task = found[0].load()
    if not isinstance(task, Task) or task.name != name:
        raise DataError(f"entry point {found[0].value!r} of task {name!r} is not a task")
    return task


def site_task(site_dir: Path) -> Task:
    """The task a site's data directory belongs to: the one its ``schema.json`` names.

    Raises:
        DataError: The schema file is missing or unreadable, or names no installed task.
    """
    path = site_dir / SCHEMA_FILE
    try:
        declared = json.loads(path.read_text(encoding="utf-8")).get("task")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        raise DataError(f"{path}: not a readable JSON object") from None
    if not isinstance(declared, str) or not declared:
        raise DataError(f"{path}: schema 'task' must be a non-empty string")
    return load_task(declared)
