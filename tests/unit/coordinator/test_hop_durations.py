"""Hop durations read from the run events: from the last assignment to the completion."""

from __future__ import annotations

import dataclasses

from prometheus_client.core import Metric

from coordinator.hop_durations import HopDurations
from coordinator.store.base import EventKind, RunRecord, RunState
from coordinator.store.memory import MemoryStore

RUN = RunRecord(
    run_id="r1", name="n", plan_toml="", sites=("a",), cycles=1, strategy="s",
    total_hops=2, created_ms=0,
)  # fmt: skip


def samples(metric: Metric) -> dict[str, float]:
    return {
        s.labels.get("le", s.name.rpartition("_")[2]): s.value
        for s in metric.samples
        if s.name.endswith(("_bucket", "_count", "_sum"))
    }


def test_a_retried_hop_counts_from_its_last_assignment_and_a_finished_run_is_read_once() -> None:
    store = MemoryStore()
    store.create_run(RUN)
    event = store.append_event
    event("r1", EventKind.HOP_ASSIGNED, time_ms=1_000, hop_index=0)
    event("r1", EventKind.HOP_FAILED, time_ms=2_000, hop_index=0)
    event("r1", EventKind.HOP_ASSIGNED, time_ms=5_000, hop_index=0)
    event("r1", EventKind.HOP_PROGRESS, time_ms=6_000, hop_index=0)
    durations = HopDurations(store, buckets=(1.0, 10.0))
    durations.update([RUN])
    assert samples(durations.metric())["count"] == 0  # hop 0 still in flight

    event("r1", EventKind.HOP_COMPLETED, time_ms=8_000, hop_index=0)
    event("r1", EventKind.HOP_ASSIGNED, time_ms=8_000, hop_index=1)
    event("r1", EventKind.HOP_COMPLETED, time_ms=8_500, hop_index=1)
    ended = dataclasses.replace(RUN, state=RunState.SUCCEEDED)
    durations.update([ended])
    expected = {"1.0": 1, "10.0": 2, "+Inf": 2, "count": 2, "sum": 3.5}
    assert samples(durations.metric()) == expected

    # A finished run is not read again: stray events change nothing.
    event("r1", EventKind.HOP_ASSIGNED, time_ms=9_000, hop_index=1)
    event("r1", EventKind.HOP_COMPLETED, time_ms=20_000, hop_index=1)
    durations.update([ended])
    assert samples(durations.metric()) == expected
