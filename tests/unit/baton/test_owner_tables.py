"""The owner's run tables show the plan's primary metric, not a fixed one."""

from __future__ import annotations

from rich.console import Console

from baton.v1 import admin_pb2, common_pb2
from owner.tables import hops_table, primary_metric, scores_table

PLAN = """
[run]
name = "lm"
sites = ["a"]
[model]
name = "logreg"
[task]
dataset = "wine"
{metric}
"""


def _render(table: object) -> str:
    console = Console(width=200, no_color=True, record=True)
    console.print(table)
    return console.export_text()


def test_the_primary_metric_comes_from_the_plan() -> None:
    assert primary_metric(PLAN.format(metric="")) == "accuracy"
    lm = PLAN.format(metric='metric = "perplexity"\nhigher_is_better = false')
    assert primary_metric(lm) == "perplexity"
    assert primary_metric("not toml [") == "accuracy"


def test_hop_and_score_tables_show_the_primary_metric_values() -> None:
    run = admin_pb2.Run(run_id="r", name="lm")
    hop = run.hops.add(hop_index=0, cycle=0, site_id="a", state=common_pb2.HOP_STATE_COMPLETED)
    hop.metrics_before.update({"perplexity": 41.25, "accuracy": 0.5})
    hop.metrics_after.update({"perplexity": 12.5})
    out = _render(hops_table(run, "perplexity"))
    row = next(line for line in out.splitlines() if "completed" in line)
    assert [c.strip() for c in row.split("│")[5:7]] == ["41.250", "12.500"], out
    assert all(f"val perplexity {when}" in out for when in ("before", "after"))

    event = admin_pb2.RunEvent(site_id="a")
    event.metrics.update({"perplexity": 9.0, "loss": 2.197, "num_examples": 40.0})
    out = _render(scores_table([event], "perplexity"))
    header = next(line for line in out.splitlines() if "site" in line)
    assert [c.strip() for c in header.split("┃")[1:5]] == [
        "site",
        "val perplexity",
        "val loss",
        "examples",
    ]
    row = next(line for line in out.splitlines() if line.startswith("│ a "))
    assert [c.strip() for c in row.split("│")[1:5]] == ["a", "9.000", "2.197", "40"]
    # Ranked by the loss itself, the loss shows once.
    assert _render(scores_table([event], "loss")).count("val loss") == 1
