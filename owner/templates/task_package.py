"""The files of a new task package (``baton new task NAME``), as ``string.Template`` texts.

Placeholders: ``$name`` (the task's and distribution's name), ``$pkg`` (its import name)
and ``$cls`` (its task class). Each template is a whole file, keyed by its path in the
package; ``$pkg`` in a path is replaced too.
"""

from __future__ import annotations

from owner.templates.task_code import EXAMPLE, TASK

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$name"
version = "0.1.0"
description = "The $name task for Baton: how a site reads its data, which metric ranks models."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["baton-fl"]

[project.optional-dependencies]
test = ["pytest"]

# Baton finds the task here: `baton task list` shows it, a plan names it.
[project.entry-points."baton.tasks"]
$name = "$pkg.task:TASK"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
"$pkg" = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

INIT = '''\
"""The $name task for Baton (its entry point: ``$pkg.task:TASK``)."""

from $pkg.task import NAME, SCHEMA, TASK, $cls

__all__ = ["NAME", "SCHEMA", "TASK", "$cls"]
'''

TEST = '''\
"""The $name task reads its example data and trains in Baton's simulator, above chance.

Run with the package installed (``pip install -e .``), so that its entry point is found.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from baton.errors import DataError
from baton.ml.task import Task, load_task
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from sim.simulate import simulate_sequential
from sim.tasks import Federation

from $pkg.example import write_example_sites, write_test_csv
from $pkg.task import NAME, SCHEMA, TASK, TRAIN_FILE, read_csv

SITES = ("site-1", "site-2", "site-3")
CHANCE = 1 / SCHEMA.num_classes
"""The accuracy of a guess on the held-out split, where every class is equally likely."""


def test_the_entry_point_finds_this_task() -> None:
    assert load_task(NAME) is TASK
    assert isinstance(TASK, Task)
    assert TASK.primary_metric.name == "accuracy"


def test_each_example_site_reads_back(tmp_path: Path) -> None:
    for site_dir in write_example_sites(tmp_path, SITES):
        schema, data = TASK.read_site_data(site_dir)
        assert schema.task == NAME
        assert (len(data.train), len(data.val)) == (240, 60)
        assert data.train.x.shape == (240, len(SCHEMA.feature_names))
        assert set(data.train.y.tolist()) == set(range(SCHEMA.num_classes))


def test_a_label_that_is_no_class_is_refused_by_line(tmp_path: Path) -> None:
    (site_dir,) = write_example_sites(tmp_path, SITES[:1])
    path = site_dir / TRAIN_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",unknown"
    path.write_text("\\n".join(lines) + "\\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: column 'label' is not one of the class"):
        TASK.read_site_data(site_dir)


def test_the_model_learns_across_the_sites_in_turn(tmp_path: Path) -> None:
    dirs = write_example_sites(tmp_path, SITES)
    federation = Federation(
        schema=SCHEMA,
        sites={site: TASK.read_site_data(d)[1] for site, d in zip(SITES, dirs, strict=True)},
        test=read_csv(write_test_csv(tmp_path / "test.csv")),
    )
    plan = RunPlan(
        run=RunSection(name="$name-simulated", sites=SITES, cycles=2, seed=0),
        model=ModelSection(name="mlp", args={"hidden": [16]}),
        task=TaskSection(dataset=NAME),
        training=TrainingSection(optimizer="adam", lr=0.01, batch_size=32, local_epochs=2),
    )
    result = simulate_sequential(plan, federation, [list(SITES)] * 2)
    assert len(result.hops) == 6
    assert result.test_metrics["accuracy"] >= CHANCE + 0.3, result.test_metrics
'''

README = """\
# $name

A task for Baton: how a site reads its own data
(`src/$pkg/task.py`), and which metric ranks models. Sites run the tasks their operator
installed; the coordinator never sends task code.

## Install

In the environment where Baton runs (each site's, and the study owner's):

```
pip install -e .
baton task list          # shows $name
python -m pytest         # its tests: they train on the example data in Baton's simulator
```

## Make it yours

In `src/$pkg/task.py`, the places marked CHANGE: `SCHEMA` (your columns and classes), the
reader `read_csv` (your file format), and the primary metric. `src/$pkg/example.py` writes
example sites (`python -m $pkg.example OUT --sites 3`); a site's data directory holds
`schema.json` (naming task `$name`), `train.csv` and `val.csv`.

## Pin it in a plan

A plan may pin the exact installed code of the task; a site with other code refuses the
run. Print the pin and paste it as the plan's `[task]` section:

```
baton task hash $name
```

## A plan

```toml
[run]
name = "$name-study"
sites = ["site-1", "site-2", "site-3"]
cycles = 3
seed = 0

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "$name"   # or the section 'baton task hash $name' prints

[ordering]
strategy = "fixed"

[training]
optimizer = "adam"
lr = 0.01
batch_size = 32
local_epochs = 2
```
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "src/$pkg/__init__.py": INIT,
    "src/$pkg/py.typed": "",
    "src/$pkg/task.py": TASK,
    "src/$pkg/example.py": EXAMPLE,
    "tests/test_task.py": TEST,
}
"""Each file of a new task package: its path and its template."""
