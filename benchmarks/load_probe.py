"""``coordinator serve`` with its heartbeat handler timed, for the load benchmark.

Run as ``python benchmarks/load_probe.py OUT.json serve -c CONFIG ...``: the coordinator
runs unchanged except that every Heartbeat's time inside the handler (identity check,
lease renewal) is recorded; at exit (Unix time, duration) pairs, in seconds, go to ``OUT.json``. The
benchmark compares them with what its clients measured, to tell the handler's share of a
heartbeat from gRPC's, the threads' and the load client's.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from pathlib import Path
from typing import Any

from coordinator.api.site import SiteService


def timed_heartbeats(out: Path) -> None:
    """Wraps ``SiteService.Heartbeat`` to time it; the durations go to ``out`` at exit."""
    durations: list[tuple[float, float]] = []
    handler = SiteService.Heartbeat

    def heartbeat(self: SiteService, request: Any, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return handler(self, request, context)
        finally:
            durations.append((time.time(), time.perf_counter() - t))

    SiteService.Heartbeat = heartbeat  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text(json.dumps(durations)))


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``seconds``, in milliseconds (0, 0 if empty)."""
    if not seconds:
        return 0.0, 0.0
    ms = sorted(x * 1000 for x in seconds)
    return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]


if __name__ == "__main__":
    timed_heartbeats(Path(sys.argv.pop(1)))
    from coordinator.cli import main

    main()
