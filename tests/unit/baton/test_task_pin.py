"""A task's installed code is pinned by a content hash that a plan can carry: stable, and
changed by any change to the code it covers but not by install-time noise."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from baton import exit_codes
from baton.errors import ConfigError
from baton.ml.tasks import check_task_pin, installed_tasks, known_tasks, task_pin
from baton.plan import TaskSection, parse_plan
from tests.unit.baton.task_dist import NAME, PACKAGE, TASK, VERSION, ToyDist, install

HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
PLAN = """
[run]
name = "pinned"
sites = ["site-a"]

[model]
name = "logreg"

{task}
[ordering]
strategy = "fixed"
"""


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyDist:
    return install(tmp_path, monkeypatch)


@pytest.fixture
def editable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyDist:
    return install(tmp_path, monkeypatch, editable=True)


def test_the_installed_simulation_task_is_pinned_to_baton_fl() -> None:
    pin = task_pin("breast_cancer")

    assert (pin.task, pin.distribution, pin.version) == (
        "breast_cancer",
        "baton-fl",
        version("baton-fl"),
    )
    assert HASH.match(pin.sha256)
    assert task_pin("breast_cancer") == pin  # stable across calls


def test_a_wheel_pin_covers_its_files_but_not_install_noise(wheel: ToyDist) -> None:
    pin = task_pin(TASK)

    assert (pin.distribution, pin.version) == (NAME, VERSION)
    # RECORD, INSTALLER, byte code and the script outside the install folder are left out.
    assert pin.sha256 == wheel.manifest(
        f"{wheel.metadata.name}/METADATA",
        f"{wheel.metadata.name}/entry_points.txt",
        f"{PACKAGE}/__init__.py",
        f"{PACKAGE}/task.py",
    )
    (wheel.metadata / "INSTALLER").write_text("uv\n")
    (wheel.package / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\x00recompiled")
    assert task_pin(TASK) == pin

    (wheel.package / "task.py").write_text("def load(path):\n    return None\n")
    changed = task_pin(TASK)
    assert HASH.match(changed.sha256)
    assert changed.sha256 != pin.sha256

    (wheel.package / "task.py").unlink()  # a listed file gone is a change too
    assert task_pin(TASK).sha256 not in (pin.sha256, changed.sha256)


def test_an_editable_pin_covers_the_task_package_sources(editable: ToyDist) -> None:
    pin = task_pin(TASK)

    assert pin.sha256 == editable.manifest(f"{PACKAGE}/__init__.py", f"{PACKAGE}/task.py")
    (editable.package / ".hidden").write_text("editor state\n")
    (editable.package / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"\x00")
    assert task_pin(TASK) == pin

    (editable.package / "data.csv").write_text("a,b\n1,2\n")  # bundled data counts
    assert task_pin(TASK).sha256 == editable.manifest(
        f"{PACKAGE}/__init__.py", f"{PACKAGE}/data.csv", f"{PACKAGE}/task.py"
    )


def test_an_unknown_task_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        task_pin("no-such-task")
    assert info.value.message == (
        f"unknown task 'no-such-task'; installed: {', '.join(known_tasks())}"
    )
    assert "breast_cancer" in known_tasks()


def test_the_pin_check_names_both_pins(wheel: ToyDist) -> None:
    pin = task_pin(TASK)
    other = "sha256:" + "a" * 64
    pinned = TaskSection(dataset=TASK, distribution=NAME, version="0.9", sha256=other)

    check_task_pin(TaskSection(dataset=TASK), pinned_by="run r", here="this site")  # no pin
    check_task_pin(
        TaskSection(dataset=TASK, distribution=NAME, version=VERSION, sha256=pin.sha256),
        pinned_by="run r",
        here="this site",
    )
    with pytest.raises(ConfigError) as info:
        check_task_pin(pinned, pinned_by="run r", here="this site")
    assert info.value.message == (
        f"run r pins task 'toy' at {other} (toytask 0.9); "
        f"this site has {pin.sha256} (toytask 1.0): install the pinned version"
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('distribution = "x"', "missing 'version', 'sha256'"),
        (f'distribution = "x"\nversion = "1"\nsha256 = "sha256:{"A" * 64}"', "64 lower-case hex"),
        (f'distribution = "x"\nversion = "1"\nsha256 = "{"a" * 64}"', "64 lower-case hex"),
        (f'distribution = "x"\nversion = "1"\nsha256 = "sha256:{"a" * 63}"', "64 lower-case hex"),
    ],
    ids=["partial", "upper-case", "no-prefix", "short"],
)
def test_a_malformed_pin_is_refused(keys: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plan(PLAN.format(task=f'[task]\ndataset = "toy"\n{keys}\n'), source="p.toml")
    assert info.value.message.startswith("p.toml: [task] ")
    assert message in info.value.message


def _baton(*args: str) -> tuple[int, str]:
    from owner.cli import app

    result = CliRunner(env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}).invoke(app, args)
    return result.exit_code, result.output


def test_task_hash_prints_a_section_the_plan_accepts(wheel: ToyDist) -> None:
    code, out = _baton("task", "hash", TASK)

    assert code == 0, out
    assert parse_plan(PLAN.format(task=out)).task == TaskSection(
        dataset=TASK, distribution=NAME, version=VERSION, sha256=task_pin(TASK).sha256
    )
    assert (TASK, NAME, VERSION) in installed_tasks()
    code, out = _baton("task", "list")
    assert code == 0, out
    assert re.search(rf"{TASK}\s.*{NAME}\s.*{re.escape(VERSION)}", out), out
    assert _baton("task", "hash", "no-such-task")[0] == exit_codes.CLI_CONFIG


def test_submit_refuses_a_plan_pinned_to_other_code_before_any_round_trip(
    wheel: ToyDist, tmp_path: Path
) -> None:
    pin = task_pin(TASK)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(task=pin.toml().replace(VERSION, "2.0")))

    code, out = _baton("submit", str(plan), "--admin", str(tmp_path / "absent.toml"))

    assert code == exit_codes.CLI_CONFIG
    assert f"this machine has {pin.sha256} (toytask 1.0)" in " ".join(out.split()), out
