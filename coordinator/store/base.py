"""The coordinator's state store: the interface, its records, and its contract.

Two implementations share one contract test suite
(``tests/unit/coordinator/test_store_contract.py``): ``MemoryStore`` for unit tests and
``SqliteStore`` (WAL) for real deployments.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from baton.domain import BlobRef, Capabilities, DataProfile


class RunState(StrEnum):
    """Lifecycle of a run; every state but RUNNING is terminal."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class HopState(StrEnum):
    """Lifecycle of a hop: PENDING -> ASSIGNED -> COMPLETED | FAILED (PENDING -> FAILED too)."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    FAILED = "failed"


class EventKind(StrEnum):
    """Kinds of run events (mirrors ``baton.v1.EventKind``)."""

    RUN_CREATED = "run_created"
    HOP_ASSIGNED = "hop_assigned"
    HOP_PROGRESS = "hop_progress"
    HOP_COMPLETED = "hop_completed"
    HOP_FAILED = "hop_failed"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    SITE_EVALUATED = "site_evaluated"
    FAULT = "fault"
    """A lost site or failed hop, and what the run's ``[faults]`` policy decided."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteRecord:
    """A registered site."""

    site_id: str
    certificate_pem: str
    """The TLS certificate the site presented at its last registration."""
    capabilities: Capabilities = field(default_factory=Capabilities)
    profile: DataProfile = field(default_factory=DataProfile)
    software_version: str = ""
    signing_certificate_pem: str = ""
    """Certificate of the site's Ed25519 manifest-signing key."""
    encryption_certificate_pem: str = ""
    """Certificate of the site's X25519 key, to which hops are sealed."""
    registered_ms: int = 0
    """Unix milliseconds of the last registration."""
    last_seen_ms: int = 0
    """Unix milliseconds of the last registration or heartbeat."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """A run."""

    run_id: str
    name: str
    plan_toml: str
    """The plan exactly as submitted."""
    sites: tuple[str, ...]
    cycles: int
    strategy: str
    total_hops: int
    created_ms: int
    state: RunState = RunState.RUNNING
    error: str = ""
    result: BlobRef | None = None
    plan_signature: bytes = b""
    """The study owner's signature over ``plan_toml``."""
    owner_signing_certificate_pem: str = ""
    """Certificate of the key that signed the plan."""
    owner_encryption_certificate_pem: str = ""
    """Certificate of the key the last hop is sealed to."""
    start_model: BlobRef | None = None
    """The model hop 0 starts from (``[model] start_from``), sealed by the owner to every
    site of the plan; None: hop 0 builds it from the plan. Kept while the run is kept."""
    start_manifest: bytes = b""
    """Signed manifest sealing ``start_model`` (serialized ``baton.v1.SignedManifest``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HopRecord:
    """One hop of a run."""

    run_id: str
    hop_index: int
    cycle: int
    site_id: str
    state: HopState = HopState.PENDING
    input: BlobRef | None = None
    output: BlobRef | None = None
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    num_examples: int = 0
    train_seconds: float = 0.0
    error: str = ""
    output_manifest: bytes = b""
    """Signed manifest sealing ``output`` (serialized ``baton.v1.SignedManifest``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRecord:
    """Something that happened in a run; ``seq`` counts from 1 per run without gaps."""

    run_id: str
    seq: int
    kind: EventKind
    time_ms: int
    hop_index: int = 0
    site_id: str = ""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingAudit:
    """An audit entry stored with the state change it records, until the signed audit
    log has it (an outbox: written in the change's transaction, so a crash between the
    commit and the log's write loses nothing)."""

    outbox_id: int = 0
    """Assigned by the store, increasing; 0 before it is queued."""
    event: str
    run_id: str = ""
    hop: int | None = None
    detail: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    """Durable coordinator state. Every method is atomic and thread-safe.

    Constraints (checked by the shared contract suite):
    - Reading or changing an unknown site, run or hop MUST raise ``NotFoundError``.
    - Creating a run whose id exists MUST raise ``ConflictError``.
    - ``update_run`` on a run in a terminal state MUST raise ``ConflictError``.
    - ``add_hops`` MUST append contiguous indices after the run's last hop (the first
      hop is 0), else ``ConflictError``.
    - Hop transitions other than PENDING->ASSIGNED, ASSIGNED->COMPLETED,
      PENDING|ASSIGNED->FAILED, and ``reopen_hop`` (ASSIGNED|COMPLETED|FAILED->ASSIGNED)
      MUST raise ``ConflictError``.
    - ``replan_hops`` MUST refuse to replace a COMPLETED hop (``ConflictError``).
    - ``append_event`` numbers a run's events 1, 2, 3, ... without gaps.
    - Every method called inside ``atomic()`` joins one transaction: an exception that
      leaves the ``with`` block MUST leave the store as it was before it (nothing of the
      block is kept); a block that ends normally keeps all of it. Blocks nest (the inner
      one joins the outer) and other threads never see half a block.
    - Records returned are snapshots: changing the store later does not change them.
    """

    def upsert_site(self, site: SiteRecord) -> None:
        """Inserts or replaces a site's registration."""
        ...

    def touch_sites(self, seen: dict[str, int]) -> None:
        """Records heartbeats (site id: ``last_seen_ms``, never moved back) in one
        transaction; sites never registered are skipped."""
        ...

    def get_site(self, site_id: str) -> SiteRecord:
        """Returns one site."""
        ...

    def list_sites(self) -> list[SiteRecord]:
        """Returns every site, ordered by id."""
        ...

    def create_run(self, run: RunRecord) -> None:
        """Records a new run."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """Returns one run."""
        ...

    def list_runs(self) -> list[RunRecord]:
        """Returns every run, newest first (by ``created_ms``, then id)."""
        ...

    def update_run(
        self,
        run_id: str,
        *,
        state: RunState,
        error: str = "",
        result: BlobRef | None = None,
    ) -> RunRecord:
        """Moves a RUNNING run to ``state``; returns the updated record."""
        ...

    def add_hops(self, run_id: str, hops: list[HopRecord]) -> None:
        """Appends planned hops (PENDING) to a run."""
        ...

    def get_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """Returns one hop."""
        ...

    def list_hops(self, run_id: str) -> list[HopRecord]:
        """Returns a run's hops by index."""
        ...

    def assign_hop(self, run_id: str, hop_index: int, *, input: BlobRef | None) -> HopRecord:
        """PENDING -> ASSIGNED, recording the input blob."""
        ...

    def complete_hop(
        self,
        run_id: str,
        hop_index: int,
        *,
        output: BlobRef,
        metrics_before: dict[str, float],
        metrics_after: dict[str, float],
        num_examples: int,
        train_seconds: float,
        output_manifest: bytes = b"",
    ) -> HopRecord:
        """ASSIGNED -> COMPLETED with the hop's output, its manifest and metrics."""
        ...

    def fail_hop(self, run_id: str, hop_index: int, *, error: str) -> HopRecord:
        """PENDING or ASSIGNED -> FAILED."""
        ...

    def reopen_hop(self, run_id: str, hop_index: int) -> HopRecord:
        """ASSIGNED|COMPLETED|FAILED -> ASSIGNED: the hop is offered to its site again (a
        retry, or a re-seal for another recipient); its input, and any output and manifest
        until a new completion replaces them, are kept; its error is cleared."""
        ...

    def replan_hops(
        self, run_id: str, from_index: int, hops: list[HopRecord], *, total_hops: int
    ) -> None:
        """Replaces the run's hops from ``from_index`` on (none completed) by ``hops``
        (PENDING, contiguous from ``from_index``) and sets the run's ``total_hops``."""
        ...

    def assigned_hops_for_site(self, site_id: str) -> list[HopRecord]:
        """ASSIGNED hops of RUNNING runs for one site, oldest run first."""
        ...

    def append_event(
        self,
        run_id: str,
        kind: EventKind,
        *,
        time_ms: int,
        hop_index: int = 0,
        site_id: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> EventRecord:
        """Appends an event with the run's next sequence number."""
        ...

    def list_events(self, run_id: str, *, after_seq: int = 0) -> list[EventRecord]:
        """Returns a run's events with ``seq > after_seq``, in order."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """A block whose changes are kept all together or not at all (see above)."""
        ...

    def queue_audit(self, entry: PendingAudit) -> int:
        """Stores an audit entry for the signed log; returns its ``outbox_id``."""
        ...

    def pending_audit(self) -> list[PendingAudit]:
        """Audit entries queued and not yet cleared, oldest first."""
        ...

    def clear_audit(self, outbox_id: int) -> None:
        """Forgets a queued audit entry (the signed log has it); unknown ids are ignored."""
        ...

    def close(self) -> None:
        """Releases resources; the store is unusable afterwards."""
        ...
