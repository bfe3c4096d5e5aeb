"""A finished run as a record: per hop its site, metrics, seconds and bytes; its fault decisions."""

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
    plan's text alone. ``faults`` lists the fault policy's decisions in the order they were
    made (:func:`fault_decision`); ``hops`` holds the hops as the run ended, without those
    dropped by ``skip`` or ``reroute``.
    """
    from baton.security.sealing import plan_hash

    started: dict[int, int] = {}
    checked: dict[int, int] = {}
    ended: dict[int, int] = {}
    created: int | None = None
    evaluations = []
    faults = []
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
        elif ev.kind == admin_pb2.EVENT_KIND_FAULT:
            faults.append(fault_decision(ev))
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
        "faults": faults,
        "final_evaluation": evaluations,
    }


LOST_HOP_ACTIONS = ("skip", "reroute")
"""Fault actions that drop a hop from the run (its site sits the cycle out)."""


def fault_decision(event: admin_pb2.RunEvent) -> dict[str, Any]:
    """One ``fault`` event as a report entry: the hop (numbered from 1, as planned when the
    decision was made: a skip or reroute plans the hops after it one place earlier; ``None``
    for a run-wide event), its cycle (from 1; ``None`` where the event does not say), site,
    action and reason.

    ``action`` is the word before the first colon of the event's message (``wait``,
    ``retry``, ``skip``, ``reroute``, ``reseal``, ``abort``; ``warning`` for a run created
    over offline sites); ``reason`` is the rest.
    """
    action, _, reason = event.message.partition(": ")
    cycle = event.metrics.get("cycle")
    return {
        "hop": event.hop_index + 1 if event.site_id else None,
        "cycle": None if cycle is None else int(cycle) + 1,
        "site": event.site_id,
        "action": action if reason else "",
        "reason": reason or action,
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
    faults = Table("hop", "cycle", "site", "action", "reason", title="fault decisions")
    for f in report["faults"]:
        cycle = "" if f["cycle"] is None else str(f["cycle"])
        hop = "" if f["hop"] is None else str(f["hop"])
        faults.add_row(hop, cycle, f["site"], f["action"], f["reason"])
    final = Table("site", *(f"val {n}" for n in names), "examples", title="final evaluation")
    for e in report["final_evaluation"]:
        m = e["metrics"]
        final.add_row(e["site"], *(fmt(m.get(n)) for n in names), f"{m.get('num_examples', 0):.0f}")
    seconds = report["seconds"]
    head = Text(
        f"{report['state']}{': ' + report['error'] if report['error'] else ''}; "
        f"{sum(h['state'] == 'completed' for h in report['hops'])} of {report['total_hops']} "
        f"hops{f' in {seconds:.1f} s' if seconds is not None else ''}{lost_hops(report)}, "
        f"{human_bytes(report['bytes_relayed'])} relayed\nplan sha256 {report['plan_sha256']}"
    )
    parts: list[Table | Text] = [hops, head]
    if report["final_evaluation"]:
        parts.insert(1, final)
    if report["faults"]:
        parts.insert(1, faults)
    return Group(*parts)


def lost_hops(report: dict[str, Any]) -> str:
    """``" (3 lost: 1 skipped, 2 rerouted)"``: the hops the fault policy dropped from the
    run; empty if none."""
    counts = [
        (action, sum(f["action"] == action for f in report["faults"]))
        for action in LOST_HOP_ACTIONS
    ]
    said = [f"{n} {'skipped' if a == 'skip' else 'rerouted'}" for a, n in counts if n]
    if not said:
        return ""
    return f" ({sum(n for _, n in counts)} lost: {', '.join(said)})"
