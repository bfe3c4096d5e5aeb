"""The task API: installed tasks are found by name, and a site's data names its task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from baton.errors import DataError
from baton.ml.data import Schema, SiteData, Split, write_site_data
from baton.ml.task import TABULAR, Task, load_task, site_task


def _site(tmp_path: Path, task: str) -> Path:
    schema = Schema(task=task, feature_names=("a", "b"), num_classes=2, class_names=("n", "y"))
    rng = np.random.default_rng(0)
    split = Split(x=rng.normal(size=(6, 2)).astype(np.float32), y=np.array([0, 1] * 3))
    write_site_data(tmp_path, SiteData(train=split, val=split), schema)
    return tmp_path


def test_built_in_tasks_load_through_their_entry_points() -> None:
    for name in ("tabular", "tokens", "breast_cancer"):
        task = load_task(name)
        assert isinstance(task, Task)
        assert task.name == name
    assert load_task("tabular") is TABULAR
    assert (TABULAR.primary_metric.name, TABULAR.primary_metric.higher_is_better) == (
        "accuracy",
        True,
    )


def test_an_uninstalled_task_is_named_with_the_installed_ones() -> None:
    with pytest.raises(DataError, match=r"task 'radiology' is not installed here; installed: "):
        load_task("radiology")


def test_a_site_reads_its_data_with_the_task_its_schema_names(tmp_path: Path) -> None:
    site = _site(tmp_path, "tabular")
    task = site_task(site)
    assert task is TABULAR
    schema, data = task.read_site_data(site)
    assert schema.task == "tabular"
    assert len(data.train) == 6


def test_a_task_refuses_data_of_another_task(tmp_path: Path) -> None:
    site = _site(tmp_path, "wine")
    with pytest.raises(DataError, match=r"the schema is for task 'wine', not 'tabular'"):
        TABULAR.read_site_data(site)


def test_a_schema_naming_no_installed_task_is_refused(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps({"task": "oncology-notes"}))
    with pytest.raises(DataError, match="task 'oncology-notes' is not installed here"):
        site_task(tmp_path)
    (tmp_path / "schema.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a readable JSON object"):
        site_task(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        site_task(tmp_path / "nowhere")
