"""Cut-through hops: the next hop's site may start while the hop before uploads its output.

Once a site's upload of hop k's output has started with a signed manifest the coordinator
verified, that output is *announced*: hop k+1's site is offered hop k+1 early (its input is
the announced blob, its input manifest the announced one) and its download follows the
arriving upload. Nothing of this is durable: hop k is completed only by CompleteHop, after
the blob is stored and verified, and then hop k+1 is assigned as always. A coordinator
restart forgets every announcement; the sender's resumed upload announces it again.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from baton.domain import BlobRef
from baton.errors import BatonError
from coordinator.engine.journal import Journal
from coordinator.store.base import HopRecord, HopState, RunState, Store


@dataclass(frozen=True, kw_only=True, slots=True)
class EarlyHop:
    """A hop offered before the hop before it completed."""

    hop: HopRecord
    """The planned (pending) hop, its ``input`` the announced blob."""
    input_manifest: bytes
    """The signed manifest sealing ``hop.input``, verified when its upload started."""


class CutThrough:
    """The announced outputs of hops in flight, and the early hops they open (thread-safe).

    Args:
        store: Durable state (read only).
        journal: Bumped when an announcement comes or goes, so assignment streams look.
        enabled: Off: nothing is ever announced (``[transfers] cut_through``).

    Constraints: an announcement MUST name the site holding hop k; an early hop exists only
    while hop k is assigned to that site and hop k+1 is planned and pending.
    """

    def __init__(self, store: Store, journal: Journal, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self._store = store
        self._journal = journal
        self._lock = threading.Lock()
        self._outputs: dict[tuple[str, int], tuple[str, BlobRef, bytes]] = {}
        """Per (run, hop): the uploading site, its output blob and signed manifest."""

    def announce(
        self, run_id: str, hop_index: int, site_id: str, blob: BlobRef, manifest: bytes
    ) -> None:
        """Records that ``site_id`` started uploading ``blob`` as hop ``hop_index``'s
        output, sealed by ``manifest`` (verified by the caller)."""
        if not self.enabled:
            return
        with self._lock:
            if self._outputs.get((run_id, hop_index)) == (site_id, blob, manifest):
                return
            self._outputs[run_id, hop_index] = (site_id, blob, manifest)
        self._journal.bump()

    def withdraw(self, run_id: str, hop_index: int, blob: BlobRef | None = None) -> bool:
        """Forgets hop ``hop_index``'s announced output (only if it is ``blob``, when
        given); returns whether an announcement was forgotten."""
        with self._lock:
            got = self._outputs.get((run_id, hop_index))
            if got is None or (blob is not None and got[1] != blob):
                return False
            del self._outputs[run_id, hop_index]
        self._journal.bump()
        return True

    def announced(self, run_id: str, hop_index: int) -> BlobRef | None:
        """The announced output of hop ``hop_index``, if any."""
        with self._lock:
            got = self._outputs.get((run_id, hop_index))
        return None if got is None else got[1]

    def early(self, run_id: str, hop_index: int, site_id: str) -> EarlyHop | None:
        """Hop ``hop_index`` of ``run_id`` if ``site_id`` may start it early, else None."""
        if not self.enabled or hop_index < 1:
            return None
        with self._lock:
            got = self._outputs.get((run_id, hop_index - 1))
        if got is None:
            return None
        sender, blob, manifest = got
        try:
            run = self._store.get_run(run_id)
            hop = self._store.get_hop(run_id, hop_index)
            prev = self._store.get_hop(run_id, hop_index - 1)
        except BatonError:
            return None
        if (
            run.state is not RunState.RUNNING
            or hop.site_id != site_id
            or hop.state is not HopState.PENDING
            or prev.state is not HopState.ASSIGNED
            or prev.site_id != sender
        ):
            return None
        return EarlyHop(hop=dataclasses.replace(hop, input=blob), input_manifest=manifest)

    def early_for_site(self, site_id: str) -> list[EarlyHop]:
        """Every hop ``site_id`` may start early now."""
        with self._lock:
            keys = list(self._outputs)
        found = (self.early(run_id, hop + 1, site_id) for run_id, hop in keys)
        return [e for e in found if e is not None]

    def waits_on(self, run_id: str, hop_index: int, site_id: str) -> bool:
        """Whether ``site_id`` holds planned hop ``hop_index`` while the hop before is
        still in flight (its output may be announced again: a retry can succeed)."""
        if not self.enabled or hop_index < 1:
            return False
        try:
            hop = self._store.get_hop(run_id, hop_index)
            prev = self._store.get_hop(run_id, hop_index - 1)
        except BatonError:
            return False
        return (
            hop.site_id == site_id
            and hop.state is HopState.PENDING
            and prev.state is HopState.ASSIGNED
        )
