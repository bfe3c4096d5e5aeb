"""``baton report``: per hop site, metrics before/after, seconds and bytes; plan hash."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from baton.security.sealing import plan_hash
from baton.v1 import admin_pb2, common_pb2
from owner.report import build_report, render_report

PLAN = '[run]\nname = "rep"\nsites = ["a", "b"]\n[task]\ndataset = "wine"\n'
T0 = 1_700_000_000_000


def _run() -> admin_pb2.Run:
    run = admin_pb2.Run(run_id="r9", name="rep", total_hops=2, cycles=1, plan_toml=PLAN)
    run.state = common_pb2.RUN_STATE_SUCCEEDED
    run.plan_signature = b"sig"
    for i, site in enumerate(["a", "b"]):
        h = run.hops.add(hop_index=i, cycle=0, site_id=site, num_examples=50 + i)
        h.state = common_pb2.HOP_STATE_COMPLETED
        h.train_seconds = 1.5
        h.output.size = 4096 + i
        if i:
            h.input.size = 4096
        h.metrics_before["accuracy"] = (0.4, 0.5)[i]
        h.metrics_after["accuracy"] = (0.7, 0.8)[i]
    run.result.size = 4097
    return run


def _events() -> list[admin_pb2.RunEvent]:
    def ev(kind: Any, t: float, hop: int = 0, site: str = "", msg: str = "") -> admin_pb2.RunEvent:
        return admin_pb2.RunEvent(
            kind=kind, time_unix_ms=T0 + int(t * 1000), hop_index=hop, site_id=site, message=msg
        )

    evaluated = ev(admin_pb2.EVENT_KIND_SITE_EVALUATED, 9, site="b")
    evaluated.metrics.update({"accuracy": 0.875, "loss": 0.25, "num_examples": 16})
    progress = admin_pb2.EVENT_KIND_HOP_PROGRESS
    return [
        ev(admin_pb2.EVENT_KIND_RUN_CREATED, -0.25),
        ev(admin_pb2.EVENT_KIND_HOP_ASSIGNED, 0, 0, "a"),
        ev(progress, 1, 0, "a", "before"),
        ev(admin_pb2.EVENT_KIND_HOP_COMPLETED, 3, 0, "a"),
        ev(admin_pb2.EVENT_KIND_HOP_ASSIGNED, 3.5, 1, "b"),
        ev(progress, 5, 1, "b", "before"),
        ev(progress, 6, 1, "b", "progress"),
        ev(admin_pb2.EVENT_KIND_HOP_COMPLETED, 7.5, 1, "b"),
        evaluated,
    ]


def test_report_holds_each_hop_numbered_from_one_and_the_plan_hash() -> None:
    rep = build_report(_run(), _events())
    assert rep["plan_sha256"] == plan_hash(PLAN, b"sig")
    assert rep["state"] == "succeeded"
    assert rep["seconds"] == 7.5  # first assignment to last completion
    assert rep["higher_is_better"] is True
    assert [h["wait_seconds"] for h in rep["hops"]] == [0.25, 0.5]
    assert rep["bytes_relayed"] == 4096 + 4097
    assert rep["hops"][1] == {
        "hop": 2,
        "cycle": 1,
        "site": "b",
        "state": "completed",
        "metrics_before": {"accuracy": 0.5},
        "metrics_after": {"accuracy": 0.8},
        "seconds": 4.0,
        "wait_seconds": 0.5,
        "receive_seconds": 1.5,
        "train_seconds": 1.5,
        "send_seconds": 1.0,
        "num_examples": 51,
        "bytes_in": 4096,
        "bytes_out": 4097,
        "error": "",
    }
    assert rep["final_evaluation"] == [
        {"site": "b", "metrics": {"accuracy": 0.875, "loss": 0.25, "num_examples": 16.0}}
    ]


def test_report_table_shows_hops_final_evaluation_and_plan_hash() -> None:
    rep = build_report(_run(), _events())
    console = Console(width=200, no_color=True, record=True)
    console.print(render_report(rep))
    out = console.export_text()
    row = next(line for line in out.splitlines() if line.startswith("│ 2 "))
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "2", "1", "b", "completed", "0.500", "0.800", "4.0", "1.5", "4 KiB", "4 KiB",
    ]  # fmt: skip
    assert "│ b    │ 0.875        │ 0.250    │ 16       │" in out
    assert f"plan sha256 {plan_hash(PLAN, b'sig')}" in out
    assert "succeeded; 2 of 2 hops in 7.5 s, 8 KiB relayed" in out
