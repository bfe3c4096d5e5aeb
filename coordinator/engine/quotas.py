"""Per-site quotas: the bytes one site may hold at the coordinator at once.

What a site holds is the sealed outputs of its hops in runs that have not ended (the store
says which) plus the uploads it made through this process for such runs, finished or not,
each counted at its declared size (a stored blob no hop names yet, a partial upload it may
resume). A blob is counted once however often it is named. A run that ends (succeeds,
fails, is cancelled) stops counting at once; its blobs are then removed from disk by the
garbage collector (:mod:`coordinator.retention`), after the retention grace.

The uploads not named by a hop are kept in a ledger beside the coordinator's state (one
small JSON file, rewritten atomically when an upload is admitted or forgotten), so a
restarted coordinator counts a partial upload from before the restart as it did before:
a site cannot pass its quota by waiting for a restart. A ledger that cannot be read is
logged and started afresh; one that cannot be written is logged, and the count in memory
stands.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import astuple, dataclass
from pathlib import Path

from baton.errors import NotFoundError
from baton.io import atomic_write
from coordinator.store.base import RunState, Store

logger = logging.getLogger(__name__)

LEDGER_FILE = "quota-uploads.json"
"""The ledger's name in the coordinator's state directory."""


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
        ledger: Where the uploads not named by a hop are kept across restarts (None: in
            memory only).
    """

    def __init__(self, store: Store, *, quota_bytes: int, ledger: Path | None = None) -> None:
        self._store = store
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._ledger = ledger
        self._uploads: dict[str, _Upload] = _read_ledger(ledger)
        """Per upload key: the uploads admitted (before a restart too), until their run ends."""

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
            known = self._uploads.get(key)
            self._uploads[key] = _Upload(site_id, run_id, blob_id, size)
            if known != self._uploads[key]:  # a resumed upload changes nothing
                self._save()

    def forget(self, key: str) -> None:
        """Stops counting the upload ``key`` (refused or discarded: nothing of it is kept)."""
        with self._lock:
            if self._uploads.pop(key, None) is not None:
                self._save()

    def _save(self) -> None:
        """Writes the ledger (under the lock); a failure is logged, not raised."""
        if self._ledger is None:
            return
        entries = {key: list(astuple(u)) for key, u in self._uploads.items()}
        try:
            atomic_write(self._ledger, json.dumps(entries, sort_keys=True))
        except OSError as exc:
            logger.warning("cannot write the quota ledger %s: %s", self._ledger, exc)

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

        ended = [key for key, u in self._uploads.items() if not is_running(u.run_id)]
        for key in ended:
            del self._uploads[key]
        if ended:
            self._save()
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


def _read_ledger(path: Path | None) -> dict[str, _Upload]:
    """The uploads a ledger holds; none if there is none, or it cannot be read (logged)."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        uploads = {
            key: _Upload(str(site), str(run), str(blob), int(size))
            for key, (site, run, blob, size) in raw.items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning(
            "the quota ledger %s cannot be read (%s): counting from the stored hops only",
            path,
            exc,
        )
        return {}
    return {key: u for key, u in uploads.items() if u.size >= 0}
