"""How long completed hops took, from their assignment to their completion, read from the
stored run events for the coordinator's metrics."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from baton.probe import HOP_BUCKETS
from coordinator.store.base import EventKind, RunState

if TYPE_CHECKING:
    from coordinator.store.base import RunRecord, Store


@dataclass(slots=True)
class _Reading:
    """How far one running run's events were read."""

    seq: int = 0
    """The last event read."""
    assigned_ms: dict[int, int] = field(default_factory=dict)
    """When each hop in flight was last assigned (Unix ms), by hop index."""


class HopDurations:
    """A histogram of completed hops' durations, over every stored run: from the hop's
    last ``hop_assigned`` event to its ``hop_completed`` event (both stamped by the
    coordinator's clock), so a hop retried after a fault counts from its last assignment.

    Each run's events are read once, incrementally: a running run from the last event
    read, a finished run never again once read to its end. Not thread-safe: the caller
    holds its own lock (:class:`~coordinator.metrics.StateCollector` does).

    Args:
        store: The coordinator's state store.
        buckets: Upper bounds of the buckets, in seconds, increasing.
    """

    def __init__(self, store: Store, buckets: tuple[float, ...] = HOP_BUCKETS) -> None:
        self._store = store
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)
        """Observations per bucket (not cumulative); the last is above every bound."""
        self._sum = 0.0
        self._reading: dict[str, _Reading] = {}
        self._finished: set[str] = set()

    def update(self, runs: list[RunRecord]) -> None:
        """Reads the events of ``runs`` not read yet. A run listed in a final state has
        all its hop events stored (its end is written in the same transaction)."""
        for run in runs:
            if run.run_id in self._finished:
                continue
            reading = self._reading.setdefault(run.run_id, _Reading())
            for event in self._store.list_events(run.run_id, after_seq=reading.seq):
                reading.seq = event.seq
                if event.kind is EventKind.HOP_ASSIGNED:
                    reading.assigned_ms[event.hop_index] = event.time_ms
                elif event.kind is EventKind.HOP_COMPLETED:
                    started = reading.assigned_ms.pop(event.hop_index, None)
                    if started is not None:
                        self._observe(max(event.time_ms - started, 0) / 1000)
            if run.state is not RunState.RUNNING:
                self._finished.add(run.run_id)
                del self._reading[run.run_id]

    def _observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def metric(self) -> HistogramMetricFamily:
        """The histogram as it stands (``baton_hop_duration_seconds``)."""
        buckets: list[tuple[str, float]] = []
        total = 0
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        for bound, count in zip(bounds, self._counts, strict=True):
            total += count
            buckets.append((bound, total))
        return HistogramMetricFamily(
            "baton_hop_duration_seconds",
            "Duration of completed hops, from their last assignment to their completion, "
            "over every stored run.",
            buckets=buckets,
            sum_value=self._sum,
        )
