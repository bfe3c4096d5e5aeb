"""``baton logs``: one line per event, hops and cycles numbered from 1, or JSON lines."""

from __future__ import annotations

import json

from baton.v1 import admin_pb2
from owner.cli_logs import event_line, event_record

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def test_hop_event_is_numbered_from_one_with_its_cycle() -> None:
    ev = admin_pb2.RunEvent(
        seq=7, run_id="r1", kind=admin_pb2.EVENT_KIND_HOP_COMPLETED, time_unix_ms=T0 + 5,
        hop_index=2, site_id="beta",
    )  # fmt: skip
    ev.metrics.update({"after_accuracy": 0.75, "train_seconds": 1.25})
    record = event_record(ev, {0: 0, 1: 0, 2: 1})
    assert record == {
        "seq": 7,
        "time": "2023-11-14T22:13:20.005Z",
        "run_id": "r1",
        "kind": "hop_completed",
        "hop": 3,
        "cycle": 2,
        "site": "beta",
        "message": "",
        "metrics": {"after_accuracy": 0.75, "train_seconds": 1.25},
    }
    assert json.loads(json.dumps(record)) == record
    assert event_line(record) == (
        "2023-11-14T22:13:20.005Z    7 hop_completed  hop 3 cycle 2 beta "
        "after_accuracy=0.75 train_seconds=1.25"
    )


def test_run_event_has_no_hop() -> None:
    ev = admin_pb2.RunEvent(
        seq=1, run_id="r1", kind=admin_pb2.EVENT_KIND_RUN_FAILED, time_unix_ms=T0,
        message="site beta failed",
    )  # fmt: skip
    record = event_record(ev, {0: 0})
    assert (record["hop"], record["cycle"], record["site"]) == (None, None, None)
    assert event_line(record) == "2023-11-14T22:13:20.000Z    1 run_failed     site beta failed"


def test_fault_names_its_hop() -> None:
    ev = admin_pb2.RunEvent(
        seq=4, kind=admin_pb2.EVENT_KIND_FAULT, time_unix_ms=T0, hop_index=0, site_id="a",
        message="wait: site a is offline",
    )  # fmt: skip
    assert event_record(ev, {0: 0})["hop"] == 1
