"""Retention of the blob store: partial uploads nobody resumes and the blobs of ended runs
are removed, keeping every blob a running run or a result fetch still needs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from baton.errors import StoreError
from coordinator.store.base import RunState, Store
from coordinator.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from coordinator.config import CoordinatorConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class GcReport:
    """What one collection removed."""

    blobs: int
    partials: int
    records: int
    bytes_freed: int


def needed_blobs(store: Store) -> set[str]:
    """Blob ids still needed: every input and output of a running run's hops (a skipped or
    re-sealed hop may need an older one) and its start model (hop 0 may be retried), and
    each succeeded run's result (the owner's fetch and the sites' evaluations)."""
    keep: set[str] = set()
    for run in store.list_runs():
        if run.state is RunState.RUNNING:
            if run.start_model is not None:
                keep.add(run.start_model.blob_id)
            for hop in store.list_hops(run.run_id):
                keep.update(ref.blob_id for ref in (hop.input, hop.output) if ref is not None)
        elif run.state is RunState.SUCCEEDED and run.result is not None:
            keep.add(run.result.blob_id)
    return keep


def collect_garbage(
    store: Store,
    root: Path,
    *,
    grace_seconds: float,
    now: float | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Removes, under a ``FileBlobStore`` at ``root``, what nothing needs and nothing has
    written for ``grace_seconds``: blobs no run needs (the grace covers a blob uploaded
    but not yet named by its CompleteHop), partial uploads, and finished-upload records.
    With ``dry_run`` nothing is removed: the report says what would be.
    """
    keep = needed_blobs(store)
    cutoff = (time.time() if now is None else now) - grace_seconds
    counts = {"sha256": 0, "partial": 0, "done": 0}
    freed = 0
    for folder, pattern in (("sha256", "*/*"), ("partial", "*"), ("done", "*")):
        for path in (root / folder).glob(pattern):
            try:
                stat = path.stat()
                if stat.st_mtime >= cutoff or (folder == "sha256" and path.name in keep):
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            counts[folder] += 1
            freed += stat.st_size if folder != "done" else 0
    report = GcReport(
        blobs=counts["sha256"],
        partials=counts["partial"],
        records=counts["done"],
        bytes_freed=freed,
    )
    if (report.blobs or report.partials) and not dry_run:
        logger.info(
            "blob store: removed %d blob(s) of ended runs and %d stale partial upload(s), %d bytes",
            report.blobs,
            report.partials,
            report.bytes_freed,
        )
    return report


def collect_once(config: CoordinatorConfig, *, dry_run: bool = False) -> GcReport:
    """One collection of a coordinator's blob store under its configured grace, beside a
    running coordinator or without one (``coordinator gc``).

    Raises:
        StoreError: The state database is missing or unusable.
    """
    if not config.database.is_file():
        raise StoreError(f"no coordinator state database at {config.database}")
    store = SqliteStore(config.database)
    try:
        return collect_garbage(
            store, config.blob_dir, grace_seconds=config.retention_grace_seconds, dry_run=dry_run
        )
    finally:
        store.close()


class Collector:
    """Collects garbage every ``interval_seconds`` in a daemon thread until :meth:`stop`.

    Args:
        store: Coordinator state.
        root: The ``FileBlobStore`` root.
        grace_seconds: See :func:`collect_garbage`.
        interval_seconds: Time between collections (the first runs at once).
    """

    def __init__(
        self, store: Store, root: Path, *, grace_seconds: float, interval_seconds: float
    ) -> None:
        self._store, self._root = store, root
        self._grace, self._interval = grace_seconds, interval_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blob-gc", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread, waiting for a collection in progress."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                collect_garbage(self._store, self._root, grace_seconds=self._grace)
            except Exception:  # a failed collection must not end the coordinator
                logger.exception("blob store garbage collection failed")
            self._stopping.wait(self._interval)
