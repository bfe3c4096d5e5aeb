"""A task package made by ``baton new task``, installed beside Baton (never into its
environment): its own tests pass, and a pinned run trains it across 3 site processes."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baton.ml.models import build_model
from baton.ml.trainer import evaluate
from owner.cli_new import scaffold_task
from sim.localfed import provision
from sim.tasks import Partition
from tests.e2e.runs import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "clinic-risk"
PACKAGE = "clinic_risk"
SITES = ["site-1", "site-2", "site-3"]
"""The sites of the plan in the generated README."""
CHANCE = 1 / 3
"""The generated task has 3 classes, equally likely in its held-out split."""


def readme_plan(package: Path, pin: str) -> str:
    """The plan of the package's README, its ``[task]`` section replaced by ``pin``."""
    readme = (package / "README.md").read_text(encoding="utf-8")
    plan = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    section = f"[task]\ndataset = \"{NAME}\"   # or the section 'baton task hash {NAME}' prints\n"
    assert section in plan, plan
    return plan.replace(section, pin)


@dataclass(frozen=True)
class Installed:
    """The generated package's source, and the folder it is installed into."""

    package: Path
    site_packages: Path

    def env(self) -> dict[str, str]:
        """This environment with the install folder first on ``PYTHONPATH``."""
        path = os.pathsep.join(
            p for p in (str(self.site_packages), os.environ.get("PYTHONPATH")) if p
        )
        return {**os.environ, "PYTHONPATH": path}

    def run(self, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Runs ``python ARGS`` with the package importable; fails with its output."""
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("new-task")
    done = Installed(package=scaffold_task(NAME, root), site_packages=root / "site-packages")
    done.run(
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(done.site_packages),
        str(done.package),
        cwd=root,
        timeout=120,
    )
    assert (done.site_packages / PACKAGE / "task.py").is_file()
    return done


def test_the_generated_tests_pass(installed: Installed) -> None:
    proc = installed.run(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=installed.package, timeout=180
    )
    assert "4 passed" in proc.stdout, proc.stdout


def test_a_pinned_run_trains_the_new_task_across_three_sites(
    installed: Installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _ = provision(
        tmp_path / "fed", SITES, dataset="wine", partition=Partition(kind="iid"), seed=0
    )
    examples = tmp_path / "examples"
    installed.run(
        "-m", f"{PACKAGE}.example", str(examples), "--sites", "3", cwd=tmp_path, timeout=60
    )
    for site in SITES:  # each hospital holds the new task's data
        shutil.rmtree(layout.site_dir(site) / "data")
        shutil.move(examples / site, layout.site_dir(site) / "data")
    pin = installed.run("-m", "owner.cli", "task", "hash", NAME, cwd=tmp_path, timeout=60).stdout
    assert pin.startswith(f'[task]\ndataset = "{NAME}"\ndistribution = "{NAME}"\n'), pin

    # The site processes inherit this environment: they find the task through its entry point.
    monkeypatch.setenv("PYTHONPATH", installed.env()["PYTHONPATH"])
    outcome = run_to_the_end(layout, SITES, readme_plan(installed.package, pin))

    assert outcome.run.total_hops == 9
    assert all(code == 0 for code in outcome.exit_codes)
    monkeypatch.syspath_prepend(str(installed.site_packages))
    task: Any = importlib.import_module(f"{PACKAGE}.task")
    test = task.read_csv(examples / "test.csv")
    model = build_model("mlp", {"hidden": [16]}, num_features=4, num_classes=3, seed=0)
    model.load_state_dict(outcome.state)
    accuracy = evaluate(model, test)["accuracy"]
    assert accuracy >= CHANCE + 0.3, accuracy
