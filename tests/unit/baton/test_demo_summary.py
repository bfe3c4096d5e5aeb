"""The demo's summary tables show the run's primary metric, named and valued."""

from __future__ import annotations

from rich.console import Console

from sim.summary import print_summary

REPORT = {
    "hops": [
        {
            "hop": 0,
            "cycle": 0,
            "site": "cardiology",
            "metrics": {
                "before": {"perplexity": 48.5, "accuracy": 0.25},
                "after": {"perplexity": 17.25, "accuracy": 0.5},
            },
            "train_seconds": 1.5,
        }
    ],
    "order": [["cardiology"]],
    "seconds": 2.0,
}


def _printed(report: dict[str, object], metric: str | None = None) -> str:
    console = Console(width=200, no_color=True, record=True)
    print_summary(console, report, title="Final", scores=[("sequential", 12.125)], metric=metric)
    return console.export_text()


def test_the_primary_metric_names_the_columns_and_gives_the_values() -> None:
    for out in (_printed(REPORT, "perplexity"), _printed({**REPORT, "metric": "perplexity"})):
        assert "Hops (validation perplexity at each site)" in out
        row = next(line for line in out.splitlines() if "cardiology" in line)
        assert [c.strip() for c in row.split("│")[4:6]] == ["48.500", "17.250"], out
        assert "┃ perplexity ┃" in out
        assert "12.1250" in out


def test_a_report_without_a_metric_shows_accuracy_as_before() -> None:
    out = _printed(REPORT)
    row = next(line for line in out.splitlines() if "cardiology" in line)
    assert [c.strip() for c in row.split("│")[4:6]] == ["0.250", "0.500"], out
    assert "Hops (validation accuracy at each site)" in out
