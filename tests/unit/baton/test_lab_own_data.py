"""Tests for ``baton lab --plan``: every order of the sites' own data, and the strategies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from baton.errors import ConfigError
from baton.ml.data import SiteData, write_site_data
from baton.plan import parse_plan
from sim.cli import register
from sim.lab.cells import STRATEGIES, Cell, Grid
from sim.lab.grid import run_grid
from sim.lab.plan_cell import OWN_DATA, run_plan_cell
from sim.own_data import simulate_sites
from sim.tasks import Federation, Partition, make_federation

SITES = ("h1", "h2", "h3")


def _plan_toml(*, model: str = "mlp", optimizer: str = "sgd", sites: str = "") -> str:
    return f"""\
[run]
name = "own"
seed = 4
cycles = 1
sites = [{sites or '"h1", "h2", "h3"'}]

[model]
name = "{model}"
args = {{ hidden = [8] }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
optimizer = "{optimizer}"
lr = 0.05
batch_size = 32
local_epochs = 1
"""


@pytest.fixture(scope="module")
def fed() -> Federation:
    return make_federation("breast_cancer", SITES, Partition(kind="dirichlet", alpha=0.5), seed=4)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, fed: Federation) -> dict[str, Path]:
    """Each site's data directory as a hospital holds it, and ``test`` with the held-out set."""
    root = tmp_path_factory.mktemp("sites")
    written = {site: root / site for site in fed.sites}
    for site, directory in written.items():
        write_site_data(directory, fed.sites[site], fed.schema)
    write_site_data(root / "test", SiteData(train=fed.test, val=fed.test), fed.schema)
    (root / "plan.toml").write_text(_plan_toml(), encoding="utf-8")
    return {**written, "test": root / "test", "plan": root / "plan.toml"}


@pytest.fixture(scope="module")
def measured(dirs: dict[str, Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sites = {s: dirs[s] for s in SITES}
    return run_plan_cell(parse_plan(_plan_toml()), sites, test=dirs["test"], repetitions=2)


def test_every_strategy_is_placed_among_all_six_orders(
    measured: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    records, meta = measured
    assert [r["strategy"] for r in records] == [label for label, _, _ in STRATEGIES] + ["fedavg"]
    for record in records:
        assert 0.0 <= record["percentile_mean"] <= 100.0
        assert record["orders"] == 6
        assert record["repetitions"] == 2
        assert record["trials"] == 1
        assert (record["dataset"], record["partition"], record["k"]) == (
            "breast_cancer",
            OWN_DATA,
            3,
        )
        assert (record["local_epochs"], record["cycles"], record["remedies"]) == (1, 1, "none")
        assert record["gap_best_worst"] >= 0.0
    assert len({r["order_noise_ratio"] for r in records}) == 1
    assert meta["orders"] == 6
    assert meta["scored_on"] == "held-out test data (113 examples)"


def test_records_carry_the_grids_keys(
    measured: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    cell = Cell(dataset="wine", partition=Partition(kind="dirichlet", alpha=0.5), k=3,
                local_epochs=1, cycles=1)  # fmt: skip
    tiny = Grid(name="tiny", cells=(cell,), seeds=(0,), repetitions=1, strategies=STRATEGIES[:1])
    grid_records, _, _ = run_grid(tiny)
    records, _ = measured
    assert all(set(r) == set(grid_records[0]) for r in records)


def test_the_plans_order_scores_as_a_simulation_of_the_plan(
    dirs: dict[str, Path],
) -> None:
    # One repetition runs with the plan's seed: the fixed strategy (the plan's site order)
    # reaches what `baton simulate` of the plan (strategy "fixed") trains with the sites'
    # own trainer.
    plan = parse_plan(_plan_toml())
    sites = {s: dirs[s] for s in SITES}
    records, _ = run_plan_cell(plan, sites, test=dirs["test"], repetitions=1)
    fixed = next(r for r in records if r["strategy"] == "fixed")
    simulated = simulate_sites(plan, sites, test=dirs["test"])
    assert simulated.test_metrics is not None
    assert fixed["accuracy_mean"] == pytest.approx(simulated.test_metrics["accuracy"], abs=1e-9)
    assert [r["repetitions"] for r in records] == [1] * len(records)


def test_plans_the_lab_cannot_measure_are_refused(dirs: dict[str, Path]) -> None:
    sites = {s: dirs[s] for s in SITES}
    with pytest.raises(ConfigError) as caught:
        run_plan_cell(parse_plan(_plan_toml(sites='"h1"')), sites, repetitions=2)
    assert str(caught.value) == "the plan has 1 site; comparing orders needs at least 2"
    with pytest.raises(ConfigError) as caught:
        run_plan_cell(parse_plan(_plan_toml()), sites, repetitions=1, max_orders=1)
    assert str(caught.value) == "--max-orders must be at least 2, not 1"


def test_a_plan_the_batched_trainer_cannot_run_trains_one_run_at_a_time(
    dirs: dict[str, Path],
) -> None:
    # Adam is not the batched trainer's: the sites' own trainer runs each order, and the
    # fixed strategy (the plan's order, with the plan's seed) reaches what
    # `baton simulate` reaches; --max-orders draws that many of the six orders.
    plan = parse_plan(_plan_toml(optimizer="adam"))
    sites = {s: dirs[s] for s in SITES}
    lines: list[str] = []
    records, meta = run_plan_cell(
        plan, sites, test=dirs["test"], repetitions=1, max_orders=3, progress=lines.append
    )
    assert (meta["trainer"], meta["orders"]) == ("sequential", 3)
    assert lines[0] == (
        "3 orders x 1 repetitions = 3 runs, one at a time with the sites' own trainer"
    )
    assert lines[1].startswith("run 1 (")
    fixed = next(r for r in records if r["strategy"] == "fixed")
    simulated = simulate_sites(plan, sites, test=dirs["test"])
    assert simulated.test_metrics is not None
    assert fixed["accuracy_mean"] == pytest.approx(simulated.test_metrics["accuracy"], abs=1e-9)
    assert sum(row["orders"] for row in meta["by_last_site"]) == 3


def test_sites_must_be_the_plans(dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        run_plan_cell(parse_plan(_plan_toml()), {"h1": dirs["h1"], "h2": dirs["h2"]})
    assert str(caught.value) == (
        "--site names must be the plan's sites (h1, h2, h3): no --site for h3"
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "smoke", "--plan", "plan.toml"], "--grid and --plan are mutually exclusive"),
        (["--site", "h1=/data"], "--site, --test and --max-orders need --plan"),
        (["--test", "test.csv"], "--site, --test and --max-orders need --plan"),
        (["--max-orders", "4"], "--site, --test and --max-orders need --plan"),
    ],
)
def test_option_conflicts_are_config_errors(tmp_path: Path, args: list[str], message: str) -> None:
    env = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    result = CliRunner(env=env).invoke(_app(), ["lab", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 60
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_lab_command_on_the_sites_directories(dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    sites = [f"--site={s}={dirs[s]}" for s in SITES]
    command = [sys.executable, "-m", "owner.cli", "lab", "--plan", str(dirs["plan"])]
    done = subprocess.run(
        [*command, *sites, "--out", str(out), "--repetitions", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert payload["meta"]["scored_on"].startswith("the sites' validation splits pooled")
    assert {r["strategy"] for r in payload["records"]} == {label for label, _, _ in STRATEGIES} | {
        "fedavg"
    }
    assert "6 orders, order/noise ratio" in done.stdout
    assert "learned" in done.stdout
    table = (out / "results.md").read_text(encoding="utf-8")
    assert table.count("\n") == len(payload["records"]) + 2
