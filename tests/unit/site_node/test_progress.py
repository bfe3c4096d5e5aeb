"""A training hop's progress reports: kept alive through long steps, best effort when the
coordinator is away, and the end of training when the coordinator refuses them."""

from __future__ import annotations

import threading
import time

import pytest

from baton.errors import Rejected, TransportError
from site_node.progress import ProgressReports


class _Coordinator:
    def __init__(self) -> None:
        self.reports: list[tuple[float, dict[str, float]]] = []
        self.fail_with: Exception | None = None
        self.lock = threading.Lock()

    def send(self, metrics: dict[str, float]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self.lock:
            self.reports.append((time.monotonic(), metrics))


def test_a_long_step_is_reported_at_least_every_keepalive_period() -> None:
    coord = _Coordinator()
    with ProgressReports(coord.send, keepalive=0.2) as progress:
        progress(1, 10, 0.5)
        time.sleep(1.3)  # one step that takes long: the trainer says nothing meanwhile
        progress(10, 10, 0.4)
    steps = [m["step"] for _, m in coord.reports]
    # The first step, keep-alive reports through the long step, and the last step.
    assert steps[0] == 1.0
    assert steps[-1] == 10.0
    assert len(steps) >= 2 + 3
    # Keep-alive reports repeat the newest progress: the coordinator sees step 1 of 10.
    assert coord.reports[1][1] == {"step": 1.0, "total_steps": 10.0, "loss": 0.5}


def test_reports_from_the_trainer_are_throttled_but_the_first_and_last_steps_go() -> None:
    coord = _Coordinator()
    with ProgressReports(coord.send, min_interval=60.0, keepalive=60.0) as progress:
        for step in range(1, 101):
            progress(step, 100, 1.0 / step)
    assert [m["step"] for _, m in coord.reports] == [1.0, 100.0]  # first and last


def test_an_unreachable_coordinator_does_not_stop_training() -> None:
    coord = _Coordinator()
    coord.fail_with = TransportError("cannot report: coordinator at c:1 unreachable")
    with ProgressReports(coord.send, min_interval=0.0, keepalive=60.0) as progress:
        progress(1, 3, 0.9)
        coord.fail_with = None
        progress(2, 3, 0.8)
        assert progress.sent == 1
    assert [m["step"] for _, m in coord.reports] == [2.0]


def test_a_refused_report_ends_training_at_the_next_step() -> None:
    coord = _Coordinator()
    refusal = Rejected("cannot report: FAILED_PRECONDITION: run is cancelled", status="x")
    with ProgressReports(coord.send, keepalive=0.1) as progress:
        progress(1, 10, 0.5)
        coord.fail_with = refusal
        time.sleep(0.5)  # the keep-alive report is refused
        with pytest.raises(Rejected) as raised:
            progress(2, 10, 0.4)
    assert raised.value is refusal
    assert len(coord.reports) == 1
