"""What happened: run events in the store, entries in the signed audit log, and the
change counter the assignment and event streams wait on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from baton.security.audit import AuditLog
from coordinator.store.base import EventKind, Store


def now_ms() -> int:
    """Wall-clock Unix milliseconds."""
    return time.time_ns() // 1_000_000


class Journal:
    """Records changes and wakes whoever waits for one.

    Engine methods hold :attr:`lock` while they change state, so a watcher woken by
    :meth:`bump` sees every change of the critical section at once.

    Args:
        store: Durable state, where run events go.
        audit: The coordinator's signed audit log (None only in unit tests).
        clock: Source of Unix milliseconds (tests inject a fake).
    """

    def __init__(
        self, store: Store, *, audit: AuditLog | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        self._store = store
        self._audit = audit
        self.clock = clock
        self.lock = threading.Condition(threading.RLock())
        self._version = 0

    @property
    def version(self) -> int:
        """Counter bumped on every change."""
        with self.lock:
            return self._version

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Blocks until the state changed after version ``seen`` or ``timeout`` passed.

        Returns the current version; callers pass it back next time.
        """
        with self.lock:
            self.lock.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version

    def bump(self) -> None:
        """Marks a change and wakes every waiter."""
        with self.lock:
            self._version += 1
            self.lock.notify_all()

    def event(
        self,
        run_id: str,
        kind: EventKind,
        *,
        hop_index: int = 0,
        site_id: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Appends a run event, stamped with the clock."""
        self._store.append_event(
            run_id,
            kind,
            time_ms=self.clock(),
            hop_index=hop_index,
            site_id=site_id,
            message=message,
            metrics=metrics,
        )

    def record(
        self,
        event: str,
        run_id: str,
        *,
        hop: int | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """Appends an entry to the signed audit log, if there is one."""
        if self._audit is not None:
            self._audit.append(event, run_id=run_id, hop=hop, detail=detail)
