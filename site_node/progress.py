"""A training hop's progress reports: throttled, kept alive while a step runs long, and
stopping the hop when the coordinator refuses them (the run was cancelled, the hop moved).

Reports keep a long but alive hop alive at the coordinator: the trainer reports after its
steps (at most every ``min_interval`` seconds), and a keep-alive thread repeats the newest
report whenever ``keepalive`` seconds passed without one, so a hop whose steps take
minutes is still heard from. A report that cannot get through (the coordinator is
unreachable) is logged and training goes on; the heartbeats carry the lease meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from baton.errors import Denied, Rejected, TransportError

logger = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 0.5
"""Least time between two progress reports from the trainer."""
KEEPALIVE_SECONDS = 30.0
"""Most time without a progress report while a hop trains."""


class ProgressReports:
    """The trainer's progress callback for one hop, with its keep-alive thread.

    Use as a context manager around training; call it as ``report(step, total, loss,
    extra)``. Once the coordinator refused a report (:class:`baton.errors.Rejected` or
    :class:`baton.errors.Denied`), the next call raises that error, which ends training.

    Args:
        send: Sends one progress report (metrics) to the coordinator.
        min_interval: Least seconds between two reports from the trainer (the last step
            is always reported).
        keepalive: Most seconds without a report while training.
    """

    def __init__(
        self,
        send: Callable[[dict[str, float]], None],
        *,
        min_interval: float = MIN_INTERVAL_SECONDS,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._send = send
        self._min_interval = min_interval
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._latest: dict[str, float] = {"step": 0.0, "total_steps": 0.0}
        self._last_sent = time.monotonic() - min_interval  # the first step is reported
        self._refused: Rejected | Denied | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="progress", daemon=True)
        self.sent = 0
        """Reports that reached the coordinator."""

    def __enter__(self) -> ProgressReports:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def __call__(
        self, step: int, total: int, loss: float, extra: dict[str, float] | None = None
    ) -> None:
        """Records the trainer's progress; reports it unless one was sent very recently.

        Raises:
            Rejected, Denied: The coordinator refused a report: the hop is no longer to
                be trained.
        """
        if self._refused is not None:
            raise self._refused
        metrics = {"step": float(step), "total_steps": float(total), "loss": loss}
        with self._lock:
            self._latest = {**metrics, **(extra or {})}
            due = step >= total or time.monotonic() - self._last_sent >= self._min_interval
        if due:
            self._report()
        if self._refused is not None:
            raise self._refused

    def _keep_alive(self) -> None:
        while not self._done.wait(self._keepalive / 4):
            with self._lock:
                due = time.monotonic() - self._last_sent >= self._keepalive
            if due:
                self._report()

    def _report(self) -> None:
        with self._send_lock:
            with self._lock:
                if self._refused is not None:
                    return
                self._last_sent = time.monotonic()
                metrics = dict(self._latest)
            try:
                self._send(metrics)
                self.sent += 1
            except (Rejected, Denied) as exc:
                logger.error("the coordinator refused a progress report: %s", exc.message)
                self._refused = exc
            except TransportError as exc:
                logger.warning("progress report not delivered (training goes on): %s", exc.message)
