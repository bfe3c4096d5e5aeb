"""``baton simulate`` on a language-model plan: the sites' own text directories, each with
its base, scored in the plan's primary metric (perplexity, lower is better)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baton.errors import ConfigError
from baton.plan import parse_plan
from sim.own_data import report_of, score_rows, simulate_sites
from tests.unit.baton.test_llm_fixtures import lm_plan_text, make_base, make_site
from tests.unit.baton.test_simulate_own_data import _baton as simulate_command


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm")
    base = make_base(root / "base")
    return {
        "s0": make_site(root / "s0", base, kind="cardio"),
        "s1": make_site(root / "s1", base, kind="generic"),
    }


def test_an_llm_plan_is_simulated_and_reported_in_perplexity(sites: dict[str, Path]) -> None:
    plan = parse_plan(lm_plan_text(sites["s0"] / "base", sites=2, steps=12), source="p.toml")
    result = simulate_sites(plan, sites)
    report = report_of(plan, result)
    assert report["metric"] == "perplexity"
    first = report["hops"][0]["metrics"]["before"]["perplexity"]
    assert report["site_perplexity"]["s0"] < 0.9 * first
    assert report["final_perplexity"] == pytest.approx(
        (report["site_perplexity"]["s0"] + report["site_perplexity"]["s1"]) / 2
    )
    assert report["test_perplexity"] is None
    assert [name for name, _ in score_rows(report)] == [
        "s0 (validation)",
        "s1 (validation)",
        "mean of the sites",
    ]
    other = parse_plan(
        lm_plan_text(sites["s0"] / "base", sites=2, steps=1).replace(
            'metric = "perplexity"', 'metric = "bleu"'
        ),
        source="p.toml",
    )
    with pytest.raises(ConfigError, match="primary metric 'bleu' is not among the task's"):
        report_of(other, simulate_sites(other, sites))


def test_the_simulate_command_prints_perplexity(sites: dict[str, Path], tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(lm_plan_text(sites["s0"] / "base", sites=2, steps=4), encoding="utf-8")
    report = tmp_path / "report.json"
    done = simulate_command(
        str(plan), "--report", str(report), *(f"--site={s}={d}" for s, d in sites.items())
    )
    assert done.returncode == 0, done.stderr
    assert "Hops (validation perplexity at each site)" in done.stdout
    data = json.loads(report.read_text(encoding="utf-8"))
    assert 1.0 < data["final_perplexity"] < data["hops"][0]["metrics"]["before"]["perplexity"]
    assert f"{data['mean_site_perplexity']:.4f}" in done.stdout
