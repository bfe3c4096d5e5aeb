"""Domain types shared by every role; wire types never reach business logic (see serde)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobRef:
    """A content-addressed blob."""

    blob_id: str
    """Lower-case hex SHA-256 of the bytes."""
    size: int
    """Length in bytes."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    """One accelerator of a site."""

    kind: str
    name: str
    memory_bytes: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Capabilities:
    """A site's hardware, as it reports it."""

    cpu_count: int = 0
    memory_bytes: int = 0
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class DataProfile:
    """What a site publishes about its data: aggregates only, never rows."""

    num_examples: int = 0
    """Training examples held."""
    label_histogram: tuple[int, ...] = ()
    """Training examples per class index."""
    schema_hash: str = ""
    """SHA-256 of the site's schema manifest."""
    task: str = ""
    """Dataset task name."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Metrics:
    """Validation metrics of one model at one site (``accuracy``, ``loss``, ...)."""

    values: dict[str, float] = field(default_factory=dict)
