"""``baton new task NAME`` writes a task package that parses, installs a task entry point and
reads its own example data; it refuses bad names and never overwrites a directory."""

from __future__ import annotations

import ast
import importlib
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from baton import exit_codes
from baton.entry import make_app
from baton.errors import ConfigError, DataError
from baton.ml.data import SCHEMA_FILE
from baton.ml.task import Task
from owner.cli_new import register, scaffold_task

FILES = {
    "pyproject.toml",
    "README.md",
    "src/heart_risk/__init__.py",
    "src/heart_risk/py.typed",
    "src/heart_risk/task.py",
    "src/heart_risk/example.py",
    "tests/test_task.py",
}
BAD_NAME = (
    "task name {!r} is not valid: use lower-case letters and digits, with single '-' or '_' "
    "between them, starting with a letter (e.g. 'heart-risk')"
)
TAKEN_NAME = (
    "task name {!r} is taken: its package {!r} would shadow a Python keyword, a standard "
    "module or Baton's own; choose another name"
)


@pytest.fixture
def imported() -> Iterator[list[str]]:
    """Imports from a generated ``src/`` are forgotten after the test."""
    before = set(sys.modules)
    names: list[str] = []
    yield names
    for name in set(sys.modules) - before:
        if name.split(".")[0] in names:
            del sys.modules[name]


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_package_holds_every_file_and_each_parses(tmp_path: Path) -> None:
    target = scaffold_task("heart-risk", tmp_path)

    assert target == tmp_path / "heart-risk"
    assert files_under(target) == FILES
    project = tomllib.loads((target / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "heart-risk"
    assert project["project"]["version"] == "0.1.0"
    assert project["project"]["dependencies"] == ["baton-fl"]
    assert project["project"]["entry-points"]["baton.tasks"] == {
        "heart-risk": "heart_risk.task:TASK"
    }
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    for name in FILES:
        if name.endswith(".py"):
            ast.parse((target / name).read_text(encoding="utf-8"), filename=name)
    task_module = ast.parse((target / "src/heart_risk/task.py").read_text(encoding="utf-8"))
    classes = [n.name for n in task_module.body if isinstance(n, ast.ClassDef)]
    assert classes == ["HeartRiskTask"]
    readme = (target / "README.md").read_text(encoding="utf-8")
    for step in ("pip install -e .", "baton task hash heart-risk", 'dataset = "heart-risk"'):
        assert step in readme
    assert "$" not in "".join((target / name).read_text(encoding="utf-8") for name in FILES)


def test_the_generated_task_reads_its_example_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imported: list[str]
) -> None:
    target = scaffold_task("heart-risk", tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(target / "src"))
    imported.append("heart_risk")
    task: Any = importlib.import_module("heart_risk.task")
    example: Any = importlib.import_module("heart_risk.example")

    assert isinstance(task.TASK, Task)
    assert (task.TASK.name, task.TASK.primary_metric.name) == ("heart-risk", "accuracy")
    dirs = example.write_example_sites(tmp_path / "sites", ["a", "b"], train=30, val=10)
    assert dirs == [tmp_path / "sites" / "a", tmp_path / "sites" / "b"]
    schema, data = task.TASK.read_site_data(dirs[0])
    assert schema.task == "heart-risk"
    assert (data.train.x.shape, data.val.x.shape) == ((30, 4), (10, 4))
    again = example.write_example_sites(tmp_path / "again", ["a"], train=30, val=10)
    assert (again[0] / "train.csv").read_bytes() == (dirs[0] / "train.csv").read_bytes()

    (dirs[1] / SCHEMA_FILE).write_text(
        (dirs[1] / SCHEMA_FILE).read_text().replace("heart-risk", "other")
    )
    with pytest.raises(DataError, match=r"schema\.json: not the schema of task 'heart-risk'"):
        task.TASK.read_site_data(dirs[1])
    train = dirs[0] / "train.csv"
    lines = train.read_text().splitlines()
    lines[4] = "x," + lines[4].split(",", 1)[1]
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: line 5: column 'f1' is not a number$"):
        task.TASK.read_site_data(dirs[0])


def test_an_existing_directory_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "heart-risk").mkdir()
    (tmp_path / "heart-risk" / "mine.txt").write_text("keep")

    with pytest.raises(ConfigError) as caught:
        scaffold_task("heart-risk", tmp_path)

    assert caught.value.message == (
        f"{tmp_path / 'heart-risk'}: already exists; remove it or choose another name or --dir"
    )
    assert files_under(tmp_path) == {"heart-risk/mine.txt"}


@pytest.mark.parametrize("name", ["Heart", "1risk", "heart--risk", "risk_", "-risk", "a b", ""])
def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        scaffold_task(name, tmp_path)
    assert caught.value.message == BAD_NAME.format(name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "package"), [("json", "json"), ("class", "class"), ("site-node", "site_node")]
)
def test_a_name_that_shadows_a_module_is_refused(tmp_path: Path, name: str, package: str) -> None:
    with pytest.raises(ConfigError) as caught:
        scaffold_task(name, tmp_path)
    assert caught.value.message == TAKEN_NAME.format(name, package)
    assert list(tmp_path.iterdir()) == []


def test_the_command_creates_then_refuses_with_the_config_exit_code(tmp_path: Path) -> None:
    app = make_app("test")
    register(app)
    runner = CliRunner(env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    where = tmp_path / "tasks"

    result = runner.invoke(app, ["new", "task", "heart-risk", "--dir", str(where)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == f"created {where / 'heart-risk'}; next:"
    assert files_under(where / "heart-risk") == FILES

    result = runner.invoke(app, ["new", "task", "heart-risk", "--dir", str(where)])
    assert result.exit_code == exit_codes.CLI_CONFIG
    assert result.stderr == (
        f"error: {where / 'heart-risk'}: already exists; remove it or choose another name "
        "or --dir\n"
    )
    result = runner.invoke(app, ["new", "task", "Heart", "--dir", str(where)])
    assert result.exit_code == exit_codes.CLI_CONFIG
    assert result.stderr == f"error: {BAD_NAME.format('Heart')}\n"
    assert sorted(p.name for p in where.iterdir()) == ["heart-risk"]
