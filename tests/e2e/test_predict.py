"""A fetched result evaluates with ``baton predict`` from its own metadata: no plan, no task
code, no reading of Baton's source."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from baton import exit_codes
from baton.ml.codec import load_metadata_file
from baton.security.sealing import plan_hash
from sim.localfed import provision
from sim.tasks import Partition
from tests.e2e.runs import run_to_the_end
from tests.e2e.test_admin_cli import baton

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["alpha", "beta"]
PLAN = """
[run]
name = "predict"
seed = 2
cycles = 2
sites = ["alpha", "beta"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "wine"

[ordering]
strategy = "fixed"
"""
MIN_ACCURACY = 0.75
"""Wine's held-out test split (36 rows) after two cycles over two iid sites: 0.86 measured
(31 of 36); the majority class alone scores 0.39."""


def test_fetched_model_predicts_the_global_test_split(tmp_path: Path) -> None:
    layout, fed = provision(
        tmp_path / "fed", SITES, dataset="wine", partition=Partition(kind="iid"), seed=2
    )
    outcome = run_to_the_end(layout, SITES, PLAN)
    model = layout.owner_dir / "result.safetensors"
    meta = load_metadata_file(model)
    assert meta["baton.run_id"] == outcome.run.run_id
    assert meta["baton.hop"] == "3"  # the last hop's output
    assert meta["baton.plan_hash"] == plan_hash(outcome.run.plan_toml, outcome.run.plan_signature)
    assert (meta["baton.task"], meta["baton.model"]) == ("wine", "mlp")

    # The owner's copy of the test split, labelled by class name, columns in reverse order.
    names = list(fed.schema.feature_names)
    data = tmp_path / "test.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", *reversed(names)])
        for row, label in zip(fed.test.x.tolist(), fed.test.y.tolist(), strict=True):
            writer.writerow([fed.schema.class_names[label], *(repr(v) for v in reversed(row))])
    out = tmp_path / "predictions.csv"

    done = baton("predict", str(model), "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    accuracy = float(done.stdout.split("accuracy ", 1)[1].split()[0])
    assert accuracy >= MIN_ACCURACY, done.stdout
    with out.open(newline="") as fh:
        predicted = list(csv.DictReader(fh))
    assert len(predicted) == len(fed.test)
    assert {p["predicted"] for p in predicted} <= set(fed.schema.class_names)
    hits = sum(
        p["predicted"] == fed.schema.class_names[y]
        for p, y in zip(predicted, fed.test.y.tolist(), strict=True)
    )
    assert hits / len(predicted) == pytest.approx(accuracy, abs=1e-4)

    # Errors are one line and an exit code of their own.
    short = tmp_path / "short.csv"
    short.write_text(",".join(names[1:]) + "\n" + ",".join("1" for _ in names[1:]) + "\n")
    bad = baton("predict", str(model), "--data", str(short))
    assert bad.returncode == exit_codes.CLI_DATA
    assert f"no column {names[0]!r}" in bad.stderr
    not_model = tmp_path / "plan.toml"
    not_model.write_text(PLAN)
    bad = baton("predict", str(not_model), "--data", str(data))
    assert bad.returncode == exit_codes.CLI_MODEL
    assert "not a valid safetensors blob" in bad.stderr
