"""Domain types shared by every role; wire types never reach business logic (see serde)."""

from __future__ import annotations

from collections.abc import Mapping
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluator:
    """A site the final model is also sealed to, so that it can evaluate it."""

    site_id: str
    signing_certificate_pem: str
    """PEM certificate of the site's signing key."""
    encryption_certificate_pem: str
    """PEM certificate of the site's encryption key; the sender checks it against its CA."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NextHop:
    """Who receives a hop's output: the next hop's site, or (``final``) the study owner."""

    final: bool
    """True when the hop is the run's last: its output goes to the study owner."""
    site_id: str = ""
    """Site that trains next; empty when ``final``."""
    hop_index: int
    """Index of the next hop; the run's total hop count when ``final``."""
    certificate_pem: str = ""
    """The recipient's TLS certificate, as presented at its registration."""
    signing_certificate_pem: str
    """PEM certificate of the recipient's signing key."""
    encryption_certificate_pem: str
    """PEM certificate of the recipient's encryption key: the sender verifies it against
    its own pinned CA, then seals the model to it."""
    evaluators: tuple[Evaluator, ...] = ()
    """When ``final`` and the plan asks every site to evaluate: the sites the model is also
    sealed to."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Assignment:
    """A hop (or, with ``evaluate_only``, an evaluation) the coordinator gives a site."""

    run_id: str
    hop_index: int
    """Position of the hop in the run, from 0."""
    cycle: int
    """Cycle of the hop, from 0."""
    total_hops: int
    plan_toml: str
    """The run plan exactly as the study owner submitted it."""
    plan_signature: bytes
    """The study owner's Ed25519 signature over the plan."""
    owner_signing_certificate_pem: str
    owner_encryption_certificate_pem: str
    input: BlobRef | None = None
    """The sealed model to start from; None for the first hop."""
    previous_site_id: str = ""
    """Site that trained the previous hop; empty for the first hop."""
    input_manifest: bytes = b""
    """Signed manifest that seals ``input``; empty for the first hop."""
    previous_manifest: bytes = b""
    """Signed manifest of the hop before the input's hop; empty for the first two hops."""
    sender_signing_certificate_pem: str = ""
    sender_encryption_certificate_pem: str = ""
    evaluate_only: bool = False
    """An evaluation of the final model, not a hop."""
    next_hop: NextHop | None = None
    """Who receives this hop's output; None for an evaluation."""


def group_by_value(values: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Sites grouped by the value each holds (a task, a schema hash), the largest group
    first, ties by first site: how refusals that name disagreeing sites list them."""
    groups: dict[str, list[str]] = {}
    for site, value in values.items():
        groups.setdefault(value, []).append(site)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0]))
