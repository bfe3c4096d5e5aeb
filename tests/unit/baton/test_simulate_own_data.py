"""Tests for sim.own_data and ``baton simulate``: a plan simulated on the sites' own directories."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baton.errors import ConfigError, DataError
from baton.ml.data import SiteData, write_site_data
from baton.plan import RunPlan, parse_plan
from ordering import OrderingContext, RandomOrder
from sim.own_data import parse_site_options, read_federation, report_of, simulate_sites
from sim.simulate import simulate_sequential
from sim.tasks import Federation, Partition, make_federation

SITES = ("h1", "h2", "h3")


def _plan_toml(*, strategy: str = "fixed", task: str = "breast_cancer", extra: str = "") -> str:
    return f"""\
[run]
name = "own"
seed = 4
cycles = 2
sites = ["h1", "h2", "h3"]

[model]
name = "mlp"
args = {{ hidden = [8] }}

[task]
dataset = "{task}"

[ordering]
strategy = "{strategy}"
{extra}
[training]
lr = 0.05
batch_size = 16
local_epochs = 1
"""


def _plan(**kwargs: str) -> RunPlan:
    return parse_plan(_plan_toml(**kwargs))


@pytest.fixture(scope="module")
def fed() -> Federation:
    return make_federation("breast_cancer", SITES, Partition(kind="dirichlet", alpha=0.5), seed=4)


def _write(root: Path, fed: Federation, *, test: bool = False) -> dict[str, Path]:
    """Each site's data directory as a hospital holds it; with ``test``, also ``root/test``
    holding the federation's test set as its validation split."""
    dirs = {site: root / site for site in fed.sites}
    for site, directory in dirs.items():
        write_site_data(directory, fed.sites[site], fed.schema)
    if test:
        write_site_data(root / "test", SiteData(train=fed.test, val=fed.test), fed.schema)
    return dirs


def test_site_options_are_names_and_directories() -> None:
    parsed = parse_site_options(["h1=/data/a", "h2=b=c"])
    assert parsed == {"h1": Path("/data/a"), "h2": Path("b=c")}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["h1"], "--site 'h1' must be NAME=DIR"),
        (["=/data"], "--site '=/data' must be NAME=DIR"),
        (["h1="], "--site 'h1=' must be NAME=DIR"),
        (["h1=a", "h1=b"], "--site h1 is given twice"),
    ],
)
def test_bad_site_options_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_site_options(values)
    assert info.value.message == message


def test_sites_must_be_the_plans(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    given = {"h1": dirs["h1"], "h2": dirs["h2"], "h4": dirs["h3"]}
    with pytest.raises(ConfigError) as info:
        read_federation(_plan(), given)
    assert info.value.message == (
        "--site names must be the plan's sites (h1, h2, h3): no --site for h3; h4 not in the plan"
    )


def test_sites_must_hold_the_plans_task(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    tabular = dataclasses.replace(fed.schema, task="tabular")
    write_site_data(dirs["h2"], fed.sites["h2"], tabular)
    with pytest.raises(ConfigError) as info:
        read_federation(_plan(), dirs)
    assert info.value.message == (
        "run plan trains task 'breast_cancer', but site h2 holds task 'tabular'"
    )
    with pytest.raises(ConfigError) as info:
        read_federation(_plan(task="tabular"), dirs)
    assert info.value.message == (
        "run plan trains task 'tabular', but sites h1, h3 hold task 'breast_cancer'"
    )


def test_sites_must_agree_on_the_schema(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    renamed = dataclasses.replace(fed.schema, class_names=("m", "b"))
    write_site_data(dirs["h1"], fed.sites["h1"], renamed)
    with pytest.raises(ConfigError) as info:
        read_federation(_plan(), dirs)
    assert info.value.message == (
        f"sites disagree on the data schema: sites h2, h3 hold schema "
        f"{fed.schema.schema_hash()[:12]}; site h1 holds schema {renamed.schema_hash()[:12]}; "
        "check that every site's feature columns and classes match"
    )


def test_test_directory_must_hold_the_sites_schema(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    renamed = dataclasses.replace(fed.schema, class_names=("m", "b"))
    write_site_data(tmp_path / "test", SiteData(train=fed.test, val=fed.test), renamed)
    with pytest.raises(ConfigError) as info:
        read_federation(_plan(), dirs, test=tmp_path / "test")
    assert info.value.message == (
        f"{tmp_path / 'test'}: the test data holds schema {renamed.schema_hash()[:12]}, "
        f"not the sites' schema {fed.schema.schema_hash()[:12]}"
    )


def test_a_site_without_data_is_a_data_error(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    dirs["h3"] = tmp_path / "empty"
    with pytest.raises(DataError, match=r"empty/schema\.json: file not found"):
        read_federation(_plan(), dirs)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'probe_runs = ["run-1"]\n',
            "the plan's [ordering] probe_runs are runs of a live federation, which a "
            "simulation does not have; remove them to simulate",
        ),
        ("options = { nearest = 1 }\n", "ordering strategy 'fixed' does not accept option(s)"),
    ],
)
def test_plans_a_simulation_cannot_follow_are_refused(
    tmp_path: Path, fed: Federation, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        simulate_sites(_plan(extra=extra), _write(tmp_path, fed))
    assert info.value.message.startswith(message)


def test_without_test_data_the_sites_validation_splits_score_the_model(
    tmp_path: Path, fed: Federation
) -> None:
    fed_read = read_federation(_plan(), _write(tmp_path, fed))
    assert list(fed_read.sites) == list(SITES)
    assert len(fed_read.test) == sum(len(d.val) for d in fed.sites.values())
    result = simulate_sites(_plan(), _write(tmp_path, fed))
    assert result.test_metrics is None
    last = result.simulation.hops[-1]
    assert result.site_metrics[last.site] == last.metrics_after
    report = report_of(_plan(), result)
    accuracies = [result.site_metrics[s]["accuracy"] for s in SITES]
    assert report["final_accuracy"] == pytest.approx(sum(accuracies) / 3)
    assert report["test_accuracy"] is None


@pytest.mark.parametrize("strategy", ["fixed", "random"])
def test_own_directories_train_exactly_what_the_simulator_trains(
    tmp_path: Path, fed: Federation, strategy: str
) -> None:
    """Data written to disk and read back by each site's task gives the same weights,
    in the order the plan's strategy gives a real run."""
    plan = _plan(strategy=strategy)
    result = simulate_sites(plan, _write(tmp_path, fed, test=True), test=tmp_path / "test")
    if strategy == "fixed":
        assert result.orders == (SITES, SITES)
    else:
        assert result.orders == tuple(
            RandomOrder().cycle_order(OrderingContext(sites=SITES, cycle=c, seed=4)) for c in (0, 1)
        )
    expected = simulate_sequential(plan, fed, result.orders)
    assert sorted(result.simulation.state) == sorted(expected.state)
    assert all(torch.equal(result.simulation.state[k], v) for k, v in expected.state.items())
    assert result.test_metrics == expected.test_metrics
    assert [h.metrics_after for h in result.simulation.hops] == [
        h.metrics_after for h in expected.hops
    ]


def test_a_test_file_scores_the_final_model(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed, test=True)
    from_file = simulate_sites(_plan(), dirs, test=tmp_path / "test" / "val.csv")
    from_dir = simulate_sites(_plan(), dirs, test=tmp_path / "test")
    assert from_file.test_metrics is not None
    assert from_file.test_metrics["num_examples"] == float(len(fed.test))
    assert from_file.test_metrics == from_dir.test_metrics


def _baton(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "owner.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_simulate_command_prints_the_tables_and_writes_the_report(
    tmp_path: Path, fed: Federation
) -> None:
    dirs = _write(tmp_path, fed, test=True)
    (tmp_path / "plan.toml").write_text(_plan_toml(strategy="reshuffle"), encoding="utf-8")
    sites = [f"--site={s}={d}" for s, d in dirs.items()]
    report_path = tmp_path / "report.json"
    plan, test = str(tmp_path / "plan.toml"), str(tmp_path / "test")
    done = _baton(plan, *sites, "--test", test, "--report", str(report_path))
    assert done.returncode == 0, done.stderr
    assert "Hops (validation accuracy at each site)" in done.stdout
    assert "held-out test data" in done.stdout
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report) == {
        "run", "task", "model", "strategy", "sites", "cycles", "order", "hops", "metric",
        "site_accuracy",
        "mean_site_accuracy", "test_accuracy", "test_examples", "final_accuracy", "seconds",
    }  # fmt: skip
    assert len(report["hops"]) == 6
    assert report["test_examples"] == len(fed.test)
    assert report["final_accuracy"] == report["test_accuracy"]
    assert f"{report['test_accuracy']:.4f}" in done.stdout


def test_simulate_command_exits_with_the_config_code(tmp_path: Path, fed: Federation) -> None:
    dirs = _write(tmp_path, fed)
    (tmp_path / "plan.toml").write_text(_plan_toml(), encoding="utf-8")
    done = _baton(str(tmp_path / "plan.toml"), f"--site=h1={dirs['h1']}")
    assert done.returncode == 60
    assert "no --site for h2, h3" in done.stderr
