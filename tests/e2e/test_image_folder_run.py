"""The built-in ``image_folder`` task end to end: PNG class folders at 3 real site
processes train a ``cnn`` that classifies held-out digits far above chance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from baton.ml.images import IMAGE_FOLDER, read_image_split
from baton.ml.models import build_model
from baton.ml.trainer import evaluate
from sim.images import write_image_federation
from sim.localfed import provision
from sim.tasks import Partition
from tests.e2e.runs import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["hospital-1", "hospital-2", "hospital-3"]
PLAN = """
[run]
name = "digit-scans"
seed = 3
cycles = 3
sites = ["hospital-1", "hospital-2", "hospital-3"]

[model]
name = "cnn"
args = { channels = [8, 16] }

[task]
dataset = "image_folder"

[ordering]
strategy = "fixed"

[training]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = 32
local_epochs = 2
"""
MIN_ACCURACY = 0.7
"""Chance is 0.1 (10 balanced classes); this run scored 0.86 on the 359 held-out images
(0.79 with 2 cycles), so 0.7 leaves a margin for the order of floating-point sums."""


def test_png_folders_train_a_cnn_across_three_sites(tmp_path: Path) -> None:
    layout, fed = provision(
        tmp_path / "fed", SITES, dataset="digits", partition=Partition(kind="iid"), seed=0
    )
    site_dirs = {site: layout.site_dir(site) / "data" for site in SITES}
    for data_dir in site_dirs.values():  # each hospital holds images, not the toy table
        shutil.rmtree(data_dir)
    shape = write_image_federation(fed, site_dirs, test_dir=tmp_path / "test")
    schema, _ = IMAGE_FOLDER.read_site_data(site_dirs["hospital-1"])
    test = read_image_split(tmp_path / "test", shape, schema)
    assert (schema.num_inputs, len(test)) == (64, len(fed.test))

    outcome = run_to_the_end(layout, SITES, PLAN)

    assert outcome.run.total_hops == 9
    model = build_model("cnn", {"channels": [8, 16]}, num_features=64, num_classes=10, seed=0)
    model.load_state_dict(outcome.state)
    accuracy = evaluate(model, test)["accuracy"]
    assert accuracy >= MIN_ACCURACY, accuracy
    assert all(code == 0 for code in outcome.exit_codes)
