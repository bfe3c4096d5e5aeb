"""The tasks installed with this environment, found through the ``baton.tasks`` entry points.

A task is what a plan's ``task.dataset`` names. Packages register theirs in the
``baton.tasks`` entry-point group (the simulations register the toy tasks this way); this
module lists their names and pins their installed code without importing them.

A pin (:class:`TaskPin`) names the distribution that provides a task, its version and a
content hash of its installed files. The hash is SHA-256 over a manifest of one line per
file, ``<relative path> <sha256 of its bytes>``, sorted by path. It leaves out what the
installer writes differently on every machine: ``RECORD``, ``INSTALLER``, ``REQUESTED``
and ``direct_url.json`` of the metadata folder, byte code (``*.pyc``, ``__pycache__``) and
files outside the install folder (console scripts, whose first line names the local
interpreter). An editable install or a source checkout lists no code among its installed
files (only its metadata and a ``.pth`` file or import finder), so its pin hashes the
source files of the task's top-level package instead (the package of the entry point's
module, hidden files and byte code left out): such a pin matches only the same kind of
install of the same sources.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path, PurePosixPath

from baton.errors import ConfigError
from baton.plan import TaskSection

__all__ = [
    "TASKS_GROUP",
    "TaskPin",
    "check_task_pin",
    "installed_tasks",
    "known_tasks",
    "task_pin",
]

TASKS_GROUP = "baton.tasks"
"""Entry-point group under which packages register tasks."""

_INSTALL_NOISE = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
"""Files of a distribution's metadata folder that differ from one install to the next."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskPin:
    """The installed code of one task: what a plan's ``[task]`` section may pin."""

    task: str
    """The task's name (``task.dataset`` in a plan)."""
    distribution: str
    """Name of the distribution whose entry point provides the task."""
    version: str
    """That distribution's installed version."""
    sha256: str
    """Content hash of its installed files: ``sha256:`` and 64 lower-case hex digits."""

    def describe(self) -> str:
        """The pin in one phrase: ``sha256:... (baton-fl 0.1.0)``."""
        return f"{self.sha256} ({self.distribution} {self.version})"

    def toml(self) -> str:
        """The plan's whole ``[task]`` section, pinned to this installed code."""
        return (
            "[task]\n"
            f"dataset = {json.dumps(self.task)}\n"
            f"distribution = {json.dumps(self.distribution)}\n"
            f"version = {json.dumps(self.version)}\n"
            f"sha256 = {json.dumps(self.sha256)}\n"
        )


def known_tasks() -> tuple[str, ...]:
    """Names of the installed tasks, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=TASKS_GROUP)}))


def installed_tasks() -> tuple[tuple[str, str, str], ...]:
    """Each installed task's name, distribution and version, sorted by name."""
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=TASKS_GROUP):
        dist = ep.dist
        found.setdefault(ep.name, ("?", "?") if dist is None else (dist.name, dist.version))
    return tuple((name, *found[name]) for name in sorted(found))


def task_pin(name: str) -> TaskPin:
    """The pin of the installed task ``name``, computed from its files; imports no task code.

    Raises:
        ConfigError: No installed task has that name (the message lists the known ones), or
            its distribution's files cannot be listed or read.
    """
    ep = _entry_point(name)
    dist = ep.dist
    if dist is None:
        raise ConfigError(f"task {name!r}: its entry point belongs to no distribution")
    label = f"task {name!r} ({dist.name})"
    if _is_editable(dist, ep.module):
        files = _package_files(ep.module.partition(".")[0], label)
    else:
        files = _installed_files(dist, label)
    return TaskPin(
        task=name, distribution=dist.name, version=dist.version, sha256=_digest(files, label)
    )


def check_task_pin(task: TaskSection, *, pinned_by: str, here: str) -> None:
    """Checks that the installed code of ``task.dataset`` is what ``task`` pins, if it pins any.

    Args:
        task: The plan's ``[task]`` section.
        pinned_by: Who pins it, for the message (``run R``, a plan file's path).
        here: Where the check runs, for the message (``this site``, ``this machine``).

    Raises:
        ConfigError: The task is not installed, or its pin differs from the plan's; the
            message names both pins.
    """
    if not task.sha256:
        return
    mine = task_pin(task.dataset)
    if (mine.distribution, mine.version, mine.sha256) != (
        task.distribution,
        task.version,
        task.sha256,
    ):
        raise ConfigError(
            f"{pinned_by} pins task {task.dataset!r} at {task.sha256} "
            f"({task.distribution} {task.version}); {here} has {mine.describe()}: "
            "install the pinned version"
        )


def _entry_point(name: str) -> EntryPoint:
    found = entry_points(group=TASKS_GROUP).select(name=name)
    for ep in found:
        return ep
    raise ConfigError(f"unknown task {name!r}; installed: {', '.join(known_tasks()) or 'none'}")


def _is_editable(dist: Distribution, module: str) -> bool:
    """Whether ``dist`` is an editable install or a source checkout rather than installed code.

    True when its ``direct_url.json`` says so, when it lists its files from a source
    checkout's ``SOURCES.txt`` (no ``RECORD`` nor ``installed-files.txt``), or when its
    files do not include the entry point's module.
    """
    direct = dist.read_text("direct_url.json")
    if direct:
        try:
            if json.loads(direct).get("dir_info", {}).get("editable", False):
                return True
        except (ValueError, AttributeError):
            pass
    if dist.read_text("RECORD") is None and dist.read_text("installed-files.txt") is None:
        return True
    as_file = module.replace(".", "/")
    wanted = {f"{as_file}.py", f"{as_file}/__init__.py"}
    return not any(str(PurePosixPath(str(f))) in wanted for f in dist.files or ())


def _installed_files(dist: Distribution, label: str) -> Iterator[tuple[str, Path | None]]:
    """The distribution's installed files, less the install-time noise, by relative path."""
    listed = dist.files
    if listed is None:
        raise ConfigError(f"{label}: the distribution does not list its installed files")
    for f in listed:
        parts = PurePosixPath(str(f)).parts
        if not parts or parts[0] == ".." or _is_bytecode(parts):
            continue
        if parts[0].endswith((".dist-info", ".egg-info")) and parts[-1] in _INSTALL_NOISE:
            continue
        path = Path(str(dist.locate_file(f)))
        yield "/".join(parts), path if path.is_file() else None


def _package_files(top: str, label: str) -> Iterator[tuple[str, Path | None]]:
    """The source files of the top-level package (or module) ``top``, as found on the path."""
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ConfigError(f"{label}: package {top!r} cannot be found")
    if spec.submodule_search_locations is None:
        if spec.origin is None:
            raise ConfigError(f"{label}: module {top!r} has no source file")
        origin = Path(spec.origin)
        yield origin.name, origin
        return
    for location in spec.submodule_search_locations:
        root = Path(location)
        for path in root.rglob("*"):
            parts = path.relative_to(root).parts
            if path.is_file() and not _is_bytecode(parts) and not _is_hidden(parts):
                yield "/".join((top, *parts)), path


def _digest(files: Iterable[tuple[str, Path | None]], label: str) -> str:
    """``sha256:`` and the hash of the sorted manifest of ``files`` (a missing file: ``-``)."""
    lines = []
    for name, path in sorted(files, key=lambda item: item[0]):
        try:
            digest = "-" if path is None else hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise ConfigError(f"{label}: cannot read {name} ({exc.strerror})") from None
        lines.append(f"{name} {digest}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _is_bytecode(parts: tuple[str, ...]) -> bool:
    return "__pycache__" in parts or parts[-1].endswith((".pyc", ".pyo"))


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") for p in parts)
