"""The tables a run's report prints: each hop's primary metric, then the final scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(
    console: Console,
    report: Mapping[str, Any],
    *,
    title: str,
    scores: Sequence[tuple[str, float]],
    label: str = "model",
    metric: str | None = None,
) -> None:
    """Prints the hop table, the score table and a line with the order of every cycle.

    Args:
        console: Where to print.
        report: A run's report: ``hops`` (each with ``hop``, ``cycle``, ``site``,
            ``metrics.before``/``metrics.after`` and ``train_seconds``), ``order`` (the
            sites of each cycle), ``seconds`` and optionally ``metric``.
        title: The score table's title.
        scores: One ``(what was scored, value of the metric)`` row each.
        label: The heading of the score table's first column.
        metric: The run's primary metric (the plan's ``[task] metric``), shown in both
            tables; default: the report's ``metric``, else ``accuracy``.
    """
    metric = metric or str(report.get("metric", "accuracy"))
    table = Table(title=f"Hops (validation {metric} at each site)")
    for col in ("hop", "cycle", "site", "before", "after", "train s"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for h in report["hops"]:
        table.add_row(
            str(h["hop"] + 1),
            str(h["cycle"] + 1),
            h["site"],
            f"{h['metrics']['before'].get(metric, float('nan')):.3f}",
            f"{h['metrics']['after'].get(metric, float('nan')):.3f}",
            f"{h['train_seconds']:.2f}",
        )
    console.print(table)
    summary = Table(title=title)
    summary.add_column(label)
    summary.add_column(metric, justify="right")
    for name, value in scores:
        summary.add_row(name, f"{value:.4f}")
    console.print(summary)
    console.print(
        f"{len(report['hops'])} hops in {report['seconds']:.1f}s; order per cycle: "
        + " | ".join(" -> ".join(c) for c in report["order"])
    )
