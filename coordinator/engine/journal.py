"""What happened: run events in the store, entries in the signed audit log, and the
change counter the assignment and event streams wait on."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from baton.errors import AuditError
from baton.security.audit import AuditLog
from coordinator.store.base import EventKind, PendingAudit, RunState, Store
from coordinator.store.kill_hook import AUDIT_APPEND, durable_write

logger = logging.getLogger(__name__)

_ENDS = frozenset({EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED})
OUTBOX_KEY = "outbox"
"""The detail key naming an audit entry's outbox id, so a restart never writes it twice."""


def now_ms() -> int:
    """Wall-clock Unix milliseconds."""
    return time.time_ns() // 1_000_000


class Journal:
    """Records changes and wakes whoever waits for one.

    Engine methods change state inside :meth:`transaction`: one store transaction under
    :attr:`lock`, so a crash keeps all of a transition or none of it, and a watcher woken
    by :meth:`bump` sees every change at once. Audit entries are stored in the same
    transaction (the store's outbox) and signed into the log after it commits; entries a
    crash or a full disk kept from the log are written by the next :meth:`flush_audit`
    (at start-up, and after every transaction). It also keeps the ids of the running runs
    (:meth:`running`), from the run events of committed transactions, so that periodic
    checks never read the finished runs.

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
        self._depth = 0
        self._logged_outbox = _last_outbox_id(audit)
        self._running: set[str] | None = None
        self._run_changes: list[tuple[str, bool]] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic state change: commits everything of the block or nothing; then
        writes its audit entries and wakes the watchers. Nested blocks join the outer one."""
        with self.lock:
            self._depth += 1
            committed = False
            try:
                with self._store.atomic():
                    yield
                committed = True
            finally:
                self._depth -= 1
                if self._depth == 0:
                    changes, self._run_changes = self._run_changes, []
                    if committed:
                        self._apply(changes)
            if self._depth == 0:
                self.flush_audit()
                self.bump()

    def running(self) -> list[str]:
        """Ids of the runs in state RUNNING, sorted: read from the store once, then kept
        from the run events of committed transactions."""
        with self.lock:
            if self._running is None:
                self._running = {
                    r.run_id for r in self._store.list_runs() if r.state is RunState.RUNNING
                }
            return sorted(self._running)

    def forget(self, run_id: str) -> None:
        """Drops ``run_id`` from :meth:`running` (a checker found it no longer running)."""
        with self.lock:
            if self._running is not None:
                self._running.discard(run_id)

    def _apply(self, changes: list[tuple[str, bool]]) -> None:
        if self._running is None:
            return  # read from the store when first asked for
        for run_id, started in changes:
            if started:
                self._running.add(run_id)
            else:
                self._running.discard(run_id)

    def flush_audit(self) -> int:
        """Signs every queued audit entry into the log, oldest first; returns how many.

        An entry the log cannot take (a full disk) stays queued for the next flush, and is
        reported as an ERROR once per flush; the state change it records stands.
        """
        if self._audit is None:
            return 0
        written = 0
        with self.lock:
            for entry in self._store.pending_audit():
                if entry.outbox_id > self._logged_outbox:
                    try:
                        self._audit.append(
                            entry.event,
                            run_id=entry.run_id,
                            hop=entry.hop,
                            detail={**entry.detail, OUTBOX_KEY: str(entry.outbox_id)},
                        )
                    except AuditError as exc:
                        logger.error("audit entries wait for the log: %s", exc.message)
                        break
                    durable_write(AUDIT_APPEND)  # a test-only crash point, off by default
                    self._logged_outbox = entry.outbox_id
                    written += 1
                self._store.clear_audit(entry.outbox_id)
        return written

    @property
    def version(self) -> int:
        """Counter bumped on every change."""
        with self.lock:
            return self._version

    def wait_for_change(
        self, seen: int, timeout: float, *, ended: threading.Event | None = None
    ) -> int:
        """Blocks until the state changed after version ``seen``, ``ended`` is set (see
        :meth:`end`), or ``timeout`` passed.

        Returns the current version; callers pass it back next time.
        """
        with self.lock:
            self.lock.wait_for(
                lambda: self._version != seen or (ended is not None and ended.is_set()),
                timeout=timeout,
            )
            return self._version

    def end(self, ended: threading.Event) -> None:
        """Sets ``ended`` and wakes its waiter (a stream whose client went away)."""
        with self.lock:
            ended.set()
            self.lock.notify_all()

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
        """Appends a run event, stamped with the clock; a run's creation or end also
        changes :meth:`running` once the transaction commits."""
        if kind is EventKind.RUN_CREATED or kind in _ENDS:
            with self.lock:
                change = (run_id, kind is EventKind.RUN_CREATED)
                if self._depth:
                    self._run_changes.append(change)
                else:
                    self._apply([change])
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
        """Queues an entry for the signed audit log (if there is one) with the transaction
        in progress, or writes it at once outside one."""
        if self._audit is None:
            return
        entry = PendingAudit(event=event, run_id=run_id, hop=hop, detail=dict(detail or {}))
        with self.lock:
            self._store.queue_audit(entry)
            if self._depth == 0:
                self.flush_audit()


def _last_outbox_id(audit: AuditLog | None) -> int:
    """The outbox id of the log's last entry (0 if none): entries up to it are written."""
    if audit is None or not audit.path.exists():
        return 0
    with audit.path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - 65536))
        lines = file.read().splitlines()
    for line in reversed(lines):
        try:
            detail = json.loads(line).get("detail", {})
        except (ValueError, AttributeError):
            continue
        value = detail.get(OUTBOX_KEY) if isinstance(detail, dict) else None
        return int(value) if isinstance(value, str) and value.isdigit() else 0
    return 0
