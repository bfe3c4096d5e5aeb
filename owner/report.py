"""A finished run as a record: per hop its site, metrics before and after, seconds and bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from baton.v1 import admin_pb2, common_pb2
from owner.tables import fmt, primary_metric
from owner.watch import human_bytes

REPORT_VERSION = 1
"""Version of the report's JSON layout; bumped when a key changes meaning or goes away."""


def build_report(run: admin_pb2.Run, events: Iterable[admin_pb2.RunEvent]) -> dict[str, Any]:
    """The report of ``run`` from the run and its events, as JSON-ready data.

    Hops and cycles are numbered from 1. ``seconds`` is a hop's wall time from assignment to
    completion (transfer, training and waiting), ``train_seconds`` the site's training
    alone; ``bytes_in``/``bytes_out`` are the sealed model's sizes as relayed.
    ``plan_sha256`` is the root of the run's manifest chain (the signed plan's hash), the
    value ``baton verify-run`` checks every hop against; ``plan_text_sha256`` hashes the
    plan's text alone.
    """
    from baton.security.sealing import plan_hash

    started: dict[int, int] = {}
    checked: dict[int, int] = {}
    ended: dict[int, int] = {}
    created: int | None = None
    evaluations = []
    for ev in events:
        if ev.kind == admin_pb2.EVENT_KIND_RUN_CREATED:
            created = ev.time_unix_ms
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED:
            started[ev.hop_index] = ev.time_unix_ms
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS and ev.message == "before":
            checked.setdefault(ev.hop_index, ev.time_unix_ms)
        elif ev.kind in (admin_pb2.EVENT_KIND_HOP_COMPLETED, admin_pb2.EVENT_KIND_HOP_FAILED):
            ended[ev.hop_index] = ev.time_unix_ms
        elif ev.kind == admin_pb2.EVENT_KIND_SITE_EVALUATED:
            evaluations.append({"site": ev.site_id, "metrics": dict(sorted(ev.metrics.items()))})
    hops = []
    for h in run.hops:
        i = h.hop_index
        seconds = (ended[i] - started[i]) / 1000 if i in started and i in ended else None
        previous = ended.get(i - 1, created if i == 0 else None)
        hops.append(
            {
                "hop": i + 1,
                "cycle": h.cycle + 1,
                "site": h.site_id,
                "state": common_pb2.HopState.Name(h.state).removeprefix("HOP_STATE_").lower(),
                "metrics_before": dict(sorted(h.metrics_before.items())),
                "metrics_after": dict(sorted(h.metrics_after.items())),
                "seconds": seconds,
                "train_seconds": h.train_seconds,
                "num_examples": h.num_examples,
                "bytes_in": h.input.size,
                "bytes_out": h.output.size,
                "error": h.error,
                **_phases(started.get(i), checked.get(i), ended.get(i), previous, h.train_seconds),
            }
        )
    spans = list(started.values()) + list(ended.values())
    return {
        "report_version": REPORT_VERSION,
        "run_id": run.run_id,
        "name": run.name,
        "state": common_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_").lower(),
        "error": run.error,
        "strategy": run.strategy,
        "cycles": run.cycles,
        "total_hops": run.total_hops,
        "metric": primary_metric(run.plan_toml),
        "higher_is_better": higher_is_better(run.plan_toml),
        "plan_sha256": plan_hash(run.plan_toml, run.plan_signature),
        "plan_text_sha256": hashlib.sha256(run.plan_toml.encode("utf-8")).hexdigest(),
        "seconds": (max(spans) - min(spans)) / 1000 if spans else None,
        "bytes_relayed": sum(h["bytes_out"] for h in hops),
        "result_bytes": run.result.size,
        "hops": hops,
        "final_evaluation": evaluations,
    }


def higher_is_better(plan_toml: str) -> bool:
    """Whether a higher primary metric is better (``[task] higher_is_better``); ``True`` for an
    unreadable plan."""
    from baton.errors import ConfigError
    from baton.plan import parse_plan

    try:
        return parse_plan(plan_toml, source="run plan").task.higher_is_better
    except ConfigError:
        return True


def _phases(
    assigned: int | None,
    checked: int | None,
    ended: int | None,
    previous: int | None,
    train_seconds: float,
) -> dict[str, float | None]:
    """A hop's wall time split by its events (seconds; ``None`` where an event is missing).

    ``wait_seconds``: from the previous hop's end (the run's creation for the first) to this
    hop's assignment. ``receive_seconds``: from assignment to the site's "before" report, i.e.
    the site picking the hop up, downloading, verifying and decrypting the model and scoring
    it. ``send_seconds``: the rest after training: scoring the trained model, sealing and
    uploading it.
    """
    wait = (assigned - previous) / 1000 if assigned is not None and previous is not None else None
    receive = (checked - assigned) / 1000 if checked is not None and assigned is not None else None
    send = None
    if checked is not None and ended is not None:
        send = max(0.0, (ended - checked) / 1000 - train_seconds)
    return {"wait_seconds": wait, "receive_seconds": receive, "send_seconds": send}


def render_report(report: dict[str, Any]) -> Group:
    """The report as a person reads it: a headline, the hops, the final evaluation."""
    metric = report["metric"]
    hops = Table(
        "hop", "cycle", "site", "state", f"{metric} before", f"{metric} after", "seconds",
        "train s", "bytes in", "bytes out", title=f"run {report['run_id']} '{report['name']}'",
    )  # fmt: skip
    for h in report["hops"]:
        hops.add_row(
            str(h["hop"]),
            str(h["cycle"]),
            h["site"],
            h["state"],
            fmt(h["metrics_before"].get(metric)),
            fmt(h["metrics_after"].get(metric)),
            "" if h["seconds"] is None else f"{h['seconds']:.1f}",
            f"{h['train_seconds']:.1f}",
            human_bytes(h["bytes_in"]) if h["bytes_in"] else "",
            human_bytes(h["bytes_out"]) if h["bytes_out"] else "",
        )
    names = [metric] if metric == "loss" else [metric, "loss"]
    final = Table("site", *(f"val {n}" for n in names), "examples", title="final evaluation")
    for e in report["final_evaluation"]:
        m = e["metrics"]
        final.add_row(e["site"], *(fmt(m.get(n)) for n in names), f"{m.get('num_examples', 0):.0f}")
    seconds = report["seconds"]
    head = Text(
        f"{report['state']}{': ' + report['error'] if report['error'] else ''}; "
        f"{sum(h['state'] == 'completed' for h in report['hops'])} of {report['total_hops']} "
        f"hops{f' in {seconds:.1f} s' if seconds is not None else ''}, "
        f"{human_bytes(report['bytes_relayed'])} relayed\nplan sha256 {report['plan_sha256']}"
    )
    parts: list[Table | Text] = [hops, head]
    if report["final_evaluation"]:
        parts.insert(1, final)
    return Group(*parts)
