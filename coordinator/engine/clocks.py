"""When each hop in flight was last heard of, and in which phase (kept in memory)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from coordinator.engine.journal import Journal


class Phase(StrEnum):
    """Where a hop stands, as its site was last heard of."""

    PICKUP = "pickup"
    TRAINING = "training"
    UPLOAD = "upload"


@dataclass(slots=True)
class HopClock:
    site_id: str
    phase: Phase
    since_ms: int
    waited_seen_ms: int | None = None
    """The site's ``last_seen_ms`` when a ``wait`` decision was made (one per absence)."""


class HopClocks:
    """When each hop in flight was last heard of, and in which phase (thread-safe)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._lock = threading.Lock()
        self._clocks: dict[tuple[str, int], HopClock] = {}

    def touch(self, run_id: str, hop_index: int, site_id: str, phase: Phase) -> None:
        """Records a sign of life of a hop (a download, a progress report, an upload)."""
        with self._lock:
            self._clocks[(run_id, hop_index)] = HopClock(site_id, phase, self._journal.clock())

    def restart(self, run_id: str, hop_index: int, site_id: str = "") -> None:
        """Starts a hop's clock again, waiting for its pick-up (assigned, or offered again)."""
        with self._lock:
            old = self._clocks.get((run_id, hop_index))
            site = site_id or (old.site_id if old else "")
            self._clocks[(run_id, hop_index)] = HopClock(site, Phase.PICKUP, self._journal.clock())

    def get(self, run_id: str, hop_index: int, site_id: str) -> HopClock:
        """The hop's clock, started now if it has none (or had another site's)."""
        with self._lock:
            clock = self._clocks.get((run_id, hop_index))
            if clock is None or clock.site_id != site_id:
                clock = HopClock(site_id, Phase.PICKUP, self._journal.clock())
                self._clocks[(run_id, hop_index)] = clock
            return clock
