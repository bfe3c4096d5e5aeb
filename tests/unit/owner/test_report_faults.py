"""``baton report`` lists the fault policy's decisions: which hops were skipped or rerouted."""

from __future__ import annotations

from rich.console import Console

from baton.v1 import admin_pb2
from owner.report import build_report, render_report
from owner.report_html import render_html
from tests.unit.owner.test_report import T0, _events, _run


def _fault(hop: int, site: str, message: str, **metrics: float) -> admin_pb2.RunEvent:
    ev = admin_pb2.RunEvent(
        kind=admin_pb2.EVENT_KIND_FAULT,
        time_unix_ms=T0,
        hop_index=hop,
        site_id=site,
        message=message,
    )
    ev.metrics.update(metrics)
    return ev


FAULTS = [
    _fault(0, "", "warning: sites offline or revoked at creation: c"),
    _fault(1, "c", "skip: hop 2 at c was lost; skip: no heartbeat for 5 s", cycle=0, skip=1),
    _fault(0, "a", "reseal: hop 1 at a seals its output again for b"),
    _fault(3, "c", "reroute: hop 4 at c was lost; reroute: no heartbeat", cycle=1, reroute=1),
]


def test_report_lists_each_fault_decision_with_its_hop_cycle_site_and_reason() -> None:
    rep = build_report(_run(), [*_events(), *FAULTS])
    assert rep["faults"] == [
        {
            "hop": None,
            "cycle": None,
            "site": "",
            "action": "warning",
            "reason": "sites offline or revoked at creation: c",
        },
        {
            "hop": 2,
            "cycle": 1,
            "site": "c",
            "action": "skip",
            "reason": "hop 2 at c was lost; skip: no heartbeat for 5 s",
        },
        {
            "hop": 1,
            "cycle": None,
            "site": "a",
            "action": "reseal",
            "reason": "hop 1 at a seals its output again for b",
        },
        {
            "hop": 4,
            "cycle": 2,
            "site": "c",
            "action": "reroute",
            "reason": "hop 4 at c was lost; reroute: no heartbeat",
        },
    ]
    assert build_report(_run(), _events())["faults"] == []


def test_report_table_and_page_show_the_dropped_hops() -> None:
    rep = build_report(_run(), [*_events(), *FAULTS])
    console = Console(width=200, no_color=True, record=True)
    console.print(render_report(rep))
    out = console.export_text()
    assert "succeeded; 2 of 2 hops in 7.5 s (2 lost: 1 skipped, 1 rerouted), 8 KiB" in out
    row = next(line for line in out.splitlines() if line.startswith("│ 4 "))
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "4", "2", "c", "reroute", "hop 4 at c was lost; reroute: no heartbeat",
    ]  # fmt: skip
    page = render_html(rep, {})
    assert "2 of 2 hops (2 lost: 1 skipped, 1 rerouted)," in page
    assert (
        '<tr class="failed"><td class="">2</td><td class="">1</td><td class="l">c</td>'
        '<td class="l">skip</td><td class="l">hop 2 at c was lost; skip: no heartbeat for 5 s'
        "</td></tr>"
    ) in page
    assert '<tr><td class="">1</td><td class=""></td><td class="l">a</td>' in page


def test_report_without_faults_has_no_fault_section() -> None:
    rep = build_report(_run(), _events())
    console = Console(width=200, no_color=True, record=True)
    console.print(render_report(rep))
    assert "fault decisions" not in console.export_text()
    assert "Fault decisions" not in render_html(rep, {})
