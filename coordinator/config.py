"""The coordinator's configuration file (TOML); relative paths are relative to the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from baton.config import load
from baton.probe import ProbeConfig
from baton.security.tls import TlsFiles


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsConfig:
    """The ``[metrics]`` table: a Prometheus endpoint (plain HTTP), off by default.

    Example::

        [metrics]
        listen = "127.0.0.1:9464"
    """

    listen: str = ""
    """Address of ``/metrics`` (``host:port``; port 0 picks a free one); empty: off. It
    shows counts and timings, never names, keys or data, but keep it local or reachable
    by the scraper alone."""

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if self.listen and not (sep and host and port.isdigit() and int(port) < 65536):
            raise ValueError(f"'metrics.listen' must be host:port, not {self.listen!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TransfersConfig:
    """The ``[transfers]`` table: cut-through hops (on unless ``cut_through = false``).

    Example::

        [transfers]
        cut_through = true
        stall_seconds = 30.0
    """

    cut_through: bool = True
    """Offer hop k+1 to its site as soon as hop k's upload starts with a signed manifest
    the coordinator verified; its download follows the arriving upload (the last byte only
    once the stored blob's size and SHA-256 check out). Hop k still completes only after
    its blob is stored and verified."""
    stall_seconds: float = 30.0
    """A download following an upload that brings nothing this long ends with a retryable
    status (the site resumes it)."""
    max_follows_per_site: int = 2
    """Most downloads one site may hold open that wait on a model still arriving (each
    holds a worker thread for up to ``stall_seconds``)."""

    def __post_init__(self) -> None:
        if self.stall_seconds <= 0:
            raise ValueError(
                f"'transfers.stall_seconds' must be positive, not {self.stall_seconds}"
            )
        if self.max_follows_per_site < 1:
            raise ValueError(
                f"'transfers.max_follows_per_site' must be at least 1, "
                f"not {self.max_follows_per_site}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class CoordinatorConfig:
    """Everything ``coordinator serve`` needs.

    Example::

        listen = "0.0.0.0:7443"
        state_dir = "state"

        [tls]
        ca = "pki/ca.pem"
        cert = "pki/coordinator.pem"
        key = "pki/coordinator.key"

    The TLS certificate and key files may be replaced while the coordinator runs (new
    connections get the new pair); so may the CRL file.
    """

    tls: TlsFiles
    """The coordinator's server certificate, its key, and the federation CA."""
    listen: str = "127.0.0.1:7443"
    """Address to bind (``host:port``; port 0 picks a free port)."""
    state_dir: Path = Path("state")
    """Holds the SQLite database (``coordinator.db``) and the blob store (``blobs/``)."""
    lease_seconds: float = 15.0
    """A site whose last heartbeat is older than this is shown offline."""
    hop_pickup_seconds: float = 600.0
    """A hop not picked up (input downloaded, or a first progress report) this long after
    its assignment is lost; the run's ``[faults] on_lost_site`` decides what follows."""
    hop_progress_seconds: float = 300.0
    """A training hop not heard from (progress report, download) this long is lost. Sites
    report at least every 30 s while they train."""
    hop_upload_seconds: float = 1800.0
    """A hop whose upload started this long ago without finishing is lost."""
    watch_interval_seconds: float = 0.0
    """How often leases and hop deadlines are checked (0: a quarter lease, at most 5 s)."""
    max_blob_bytes: int = 64 << 30
    """Largest model blob a site may upload."""
    site_quota_bytes: int = 256 << 30
    """Most bytes one site may hold at the coordinator at once: the sealed outputs of its
    hops in runs that have not ended (a run keeps every hop's output until it ends: a site
    of a 3-cycle run holds 3), plus its uploads under way (at their declared size; they
    are kept in ``quota-uploads.json`` in the state directory, so they still count after a
    restart). An upload that would exceed it is refused with RESOURCE_EXHAUSTED naming the quota and
    the site's usage; a run's blobs stop counting when it ends (and are removed by the
    garbage collector after ``retention_grace_seconds``). 0: no quota."""
    workers: int = 1024
    """gRPC worker threads. Each open assignment stream, upload, download or event stream
    holds one while it lasts; :attr:`reserved_workers` of them are kept for the short
    calls (heartbeats, registrations, admin calls), so those are never starved. A thread
    waiting on a stream costs little memory (its stack is mostly never touched)."""
    reserved_workers: int = 32
    """Worker threads long calls never take: beyond ``workers - reserved_workers`` open
    long calls, a new one is refused with RESOURCE_EXHAUSTED (sites retry it later)."""
    max_streams_per_site: int = 2
    """Most assignment streams (admins: event streams) one participant may hold open."""
    max_uploads_per_site: int = 4
    """Most uploads one participant may hold open; a stalled or header-less upload holds
    one of them, never a thread of another site."""
    upload_idle_seconds: float = 120.0
    """An upload that sends nothing (not even its header) this long is ended, freeing its
    slot; the site resumes it later from what was committed."""
    retention_grace_seconds: float = 86400.0
    """A blob no running run needs and no succeeded run holds as its result, a partial
    upload, or a finished upload's record, left untouched this long, is removed."""
    gc_interval_seconds: float = 3600.0
    """How often the blob store is collected (0: never)."""
    blob_verify_seconds: float = 3600.0
    """How often the blobs of running runs are hashed again (0: never), reading at most
    32 MiB/s; a corrupt copy is logged and audited, and one not yet downloaded is sealed
    again by its sender first."""
    crl: Path | None = None
    """The federation CA's revocation list (``baton pki revoke``). When set, the file MUST
    exist and be fresh, and peers with a revoked certificate are refused; when unset,
    nothing is revoked."""
    crl_reload_seconds: float = 5.0
    """How often the coordinator looks for a replaced CRL file at most."""
    transfers: TransfersConfig = TransfersConfig()
    """Cut-through hops (``[transfers]``); on unless ``cut_through = false``."""
    metrics: MetricsConfig = MetricsConfig()
    """The Prometheus endpoint (``[metrics]``); off unless ``listen`` is set."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Liveness and readiness probes (``[probe]``); off unless ``listen`` is set. Ready
    means the gRPC port serves."""

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError(f"'lease_seconds' must be positive, not {self.lease_seconds}")
        deadlines = (self.hop_pickup_seconds, self.hop_progress_seconds, self.hop_upload_seconds)
        if min(deadlines) <= 0 or self.watch_interval_seconds < 0:
            raise ValueError(
                "hop deadlines must be positive and 'watch_interval_seconds' not negative"
            )
        if self.site_quota_bytes and self.site_quota_bytes < self.max_blob_bytes:
            raise ValueError(
                f"'site_quota_bytes' must be 0 (no quota) or at least 'max_blob_bytes' "
                f"({self.max_blob_bytes}), not {self.site_quota_bytes}"
            )
        if self.workers < 4:
            raise ValueError(f"'workers' must be at least 4, not {self.workers}")
        if not 1 <= self.reserved_workers < self.workers:
            raise ValueError(
                f"'reserved_workers' must be between 1 and workers - 1, not {self.reserved_workers}"
            )
        if self.max_streams_per_site < 1 or self.max_uploads_per_site < 1:
            raise ValueError("'max_streams_per_site' and 'max_uploads_per_site' must be at least 1")
        if self.upload_idle_seconds <= 0:
            raise ValueError(
                f"'upload_idle_seconds' must be positive, not {self.upload_idle_seconds}"
            )
        if self.retention_grace_seconds < 0 or self.gc_interval_seconds < 0:
            raise ValueError(
                "'retention_grace_seconds' and 'gc_interval_seconds' must not be negative"
            )
        if self.blob_verify_seconds < 0:
            raise ValueError(
                f"'blob_verify_seconds' must not be negative, not {self.blob_verify_seconds}"
            )
        if self.crl_reload_seconds < 0:
            raise ValueError(
                f"'crl_reload_seconds' must not be negative, not {self.crl_reload_seconds}"
            )
        if ":" not in self.listen:
            raise ValueError(f"'listen' must be host:port, not {self.listen!r}")

    @property
    def database(self) -> Path:
        """The SQLite state file."""
        return self.state_dir / "coordinator.db"

    @property
    def blob_dir(self) -> Path:
        """The content-addressed blob store's root."""
        return self.state_dir / "blobs"


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    """Loads a coordinator config, resolving relative paths against the file's directory.

    Raises:
        ConfigError: The file is missing, not TOML, or its keys or values are invalid.
    """
    return load(CoordinatorConfig, path)
