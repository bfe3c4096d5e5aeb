"""The owner's run tables, headed and filled with the run's primary metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from baton.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baton.v1 import admin_pb2


def primary_metric(plan_toml: str) -> str:
    """The metric a run's plan ranks by (``[task] metric``); ``accuracy`` for an unreadable plan."""
    from baton.plan import parse_plan

    try:
        return parse_plan(plan_toml, source="run plan").task.metric
    except ConfigError:
        return "accuracy"


def hops_table(run: admin_pb2.Run, metric: str) -> Table:
    """One row per hop (hop and cycle numbered from 1): where it ran, its state, and ``metric``
    before and after training."""
    from baton.v1 import common_pb2

    table = Table("hop", "cycle", "site", "state", f"val {metric} before", f"val {metric} after")
    for h in run.hops:
        table.add_row(
            str(h.hop_index + 1),
            str(h.cycle + 1),
            h.site_id,
            common_pb2.HopState.Name(h.state).removeprefix("HOP_STATE_").lower(),
            fmt(h.metrics_before.get(metric)),
            fmt(h.metrics_after.get(metric)),
        )
    return table


def scores_table(evaluated: Iterable[admin_pb2.RunEvent], metric: str) -> Table:
    """The final model at each site that evaluated it: ``metric``, the loss and the examples."""
    names = [metric] if metric == "loss" else [metric, "loss"]
    table = Table("site", *(f"val {n}" for n in names), "examples", title="final model")
    for e in evaluated:
        table.add_row(
            e.site_id,
            *(fmt(e.metrics.get(n)) for n in names),
            f"{e.metrics.get('num_examples', 0):.0f}",
        )
    return table


def fmt(v: float | None) -> str:
    """A metric's value to 3 decimals; empty when the hop did not report it."""
    return "" if v is None else f"{v:.3f}"


def sites_table(sites: Iterable[admin_pb2.Site], now_ms: int) -> Table:
    """One row per registered site: its lease, when it was last heard of, its software
    version, and what it published about its data and hardware."""
    table = Table("site", "online", "last seen", "version", "examples", "labels", "cpus")
    for s in sites:
        table.add_row(
            s.site_id,
            "yes" if s.online else "no",
            _ago(now_ms - s.last_seen_unix_ms) if s.last_seen_unix_ms else "never",
            s.software_version or "?",
            str(s.profile.num_examples),
            str(list(s.profile.label_histogram)),
            str(s.capabilities.cpu_count),
        )
    return table


def _ago(ms: int) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago`` or ``2 d ago``."""
    seconds = max(0, ms) // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
