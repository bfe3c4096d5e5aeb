"""Per-site quotas: the bytes one site may hold at the coordinator at once.

What a site holds is the sealed outputs of its hops in runs that have not ended (the store
says which) plus the uploads it made through this process for such runs, finished or not,
each counted at its declared size (a stored blob no hop names yet, a partial upload it may
resume). A blob is counted once however often it is named. A run that ends (succeeds,
fails, is cancelled) stops counting at once; its blobs are then removed from disk by the
garbage collector (:mod:`coordinator.retention`), after the retention grace.

A restart forgets the uploads not named by a hop: a partial upload from before the
restart counts again once it is resumed (until then only the retention grace bounds it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from baton.errors import NotFoundError
from coordinator.store.base import RunState, Store


class OverQuota(Exception):
    """An upload would take a site past its quota; ``message`` says by how much and what
    frees space (it goes to the site as RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Upload:
    site_id: str
    run_id: str
    blob_id: str
    size: int


class SiteQuotas:
    """Counts what each site holds and refuses an upload that would exceed ``quota_bytes``.

    Constraints: an upload whose declared size, added to what its site holds without it,
    exceeds the quota MUST be refused before any byte is stored; one that fits MUST be
    admitted; a site's uploads for a run stop counting when that run ends.

    Args:
        store: Coordinator state (runs and hops).
        quota_bytes: Most bytes one site may hold; 0: no quota.
    """

    def __init__(self, store: Store, *, quota_bytes: int) -> None:
        self._store = store
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._uploads: dict[str, _Upload] = {}
        """Per upload key: the uploads made through this process, until their run ends."""

    def usage(self, site_id: str) -> int:
        """Bytes ``site_id`` holds at the coordinator now."""
        with self._lock:
            return self._usage(site_id, excluding="")

    def admit(self, site_id: str, key: str, *, run_id: str, blob_id: str, size: int) -> None:
        """Admits the upload ``key`` of ``size`` bytes declared (for ``run_id``) and counts
        it from now until its run ends, or until :meth:`forget`.

        Raises:
            OverQuota: ``size`` added to what the site holds without it exceeds the quota.
        """
        with self._lock:
            if self.quota_bytes:
                held = self._usage(site_id, excluding=key)
                if held + size > self.quota_bytes:
                    raise OverQuota(
                        f"upload of {size} bytes refused: site {site_id} holds {held} bytes at "
                        f"the coordinator and its quota (site_quota_bytes) is "
                        f"{self.quota_bytes}; space is freed as its runs end (their blobs "
                        "are then garbage-collected)"
                    )
            self._uploads[key] = _Upload(site_id, run_id, blob_id, size)

    def forget(self, key: str) -> None:
        """Stops counting the upload ``key`` (refused or discarded: nothing of it is kept)."""
        with self._lock:
            self._uploads.pop(key, None)

    def _usage(self, site_id: str, *, excluding: str) -> int:
        """What the site holds, but the upload ``excluding``; drops uploads of ended runs."""
        running: dict[str, bool] = {}

        def is_running(run_id: str) -> bool:
            if run_id not in running:
                try:
                    running[run_id] = self._store.get_run(run_id).state is RunState.RUNNING
                except NotFoundError:
                    running[run_id] = False
            return running[run_id]

        for key, upload in list(self._uploads.items()):
            if not is_running(upload.run_id):
                del self._uploads[key]
        held: dict[str, int] = {
            u.blob_id: u.size
            for key, u in self._uploads.items()
            if u.site_id == site_id and key != excluding
        }
        for run in self._store.list_runs():
            if run.state is not RunState.RUNNING:
                continue
            for hop in self._store.list_hops(run.run_id):
                if hop.site_id == site_id and hop.output is not None:
                    held[hop.output.blob_id] = hop.output.size
        return sum(held.values())
