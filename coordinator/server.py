"""Assembles the coordinator: state store, blob store, scheduler, and the mTLS gRPC server."""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from baton.errors import StoreError, TransportError
from baton.io import atomic_write
from baton.probe import ProbeServer
from baton.security.audit import AuditLog, key_fingerprint
from baton.security.pki import load_private_key
from baton.security.pki_leaf import SERVER_KIND
from baton.security.revocation import revocation_check
from baton.security.tls import TlsMaterial, require_kind
from baton.v1 import admin_pb2_grpc, site_pb2_grpc
from baton.wire.channel import SERVER_OPTIONS
from coordinator.api.admin import AdminService
from coordinator.api.auth import GatedHealth, PeerGate
from coordinator.api.errors import ErrorInterceptor
from coordinator.api.idle import IdleUploads
from coordinator.api.limits import StreamCaps
from coordinator.api.site import SiteService
from coordinator.blobs import FileBlobStore
from coordinator.config import CoordinatorConfig
from coordinator.engine.leases import Deadlines, HopWatch
from coordinator.engine.quotas import LEDGER_FILE, SiteQuotas
from coordinator.engine.runs import Scheduler
from coordinator.engine.sites import Sites
from coordinator.engine.transfers import Transfers
from coordinator.metrics import MetricsEndpoint
from coordinator.retention import Collector
from coordinator.state_dir import StateDirLock
from coordinator.store import kill_hook
from coordinator.store.audit_head import check_audit_head
from coordinator.store.base import Store
from coordinator.store.sqlite import SqliteStore
from coordinator.tls_reload import ReloadingServerCredentials
from coordinator.verify_blobs import BlobVerifier

logger = logging.getLogger(__name__)

SERVICE_NAMES = ("baton.v1.SiteService", "baton.v1.AdminService")


class CoordinatorServer:
    """A running coordinator. Use ``start()`` then ``stop()`` (or as a context manager).

    The TLS certificate and key files named by ``config.tls`` may be replaced while it
    runs: new connections get the new pair. Peers whose certificate the CRL named by
    ``config.crl`` revokes are refused on every RPC, health checks included; the CRL file
    may be replaced too. Every call MUST come over TLS 1.3.

    Args:
        config: The coordinator's configuration.
        tls: TLS material loaded from ``config.tls`` (the caller reports PKI errors before
            anything starts).
        store: State store; defaults to SQLite under ``config.state_dir``, checked against
            the audit log's head: a database that lost state changes the log records (a
            lost WAL) refuses to start.
        accept_state_loss: Start anyway on such a database, logging what was lost.

    Raises:
        PkiError: If the certificate is not a coordinator's (another kind, or without the
            TLS server purpose), or ``config.crl`` is set and the CRL is missing, stale
            or not the CA's.
        ConfigError: If ``config.state_dir`` is not a directory.
        StoreError: If the state directory or database is not writable, another
            coordinator holds the state directory, or the database lacks state changes
            the audit log records.
        TransportError: If the listen address cannot be bound.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        tls: TlsMaterial,
        *,
        store: Store | None = None,
        accept_state_loss: bool = False,
    ) -> None:
        self.config = config
        require_kind(tls, SERVER_KIND, source=str(config.tls.cert))
        revoked = revocation_check(config.crl, tls.ca_pem, interval=config.crl_reload_seconds)
        self._state = StateDirLock(config.state_dir)
        kill_hook.bind(config.state_dir)  # a test-only crash point; off unless its variable is set
        try:
            self.store: Store = store if store is not None else SqliteStore(config.database)
        except BaseException:
            self._state.release()
            raise
        try:
            self.blobs = FileBlobStore(config.blob_dir)
            self.audit = open_audit_log(config.state_dir, tls)
            if store is None:
                check_audit_head(config.database, self.audit.path, accept_loss=accept_state_loss)
        except BaseException:
            if hasattr(self, "audit"):
                self.audit.close()
            self.store.close()
            self._state.release()
            raise
        self.scheduler = Scheduler(
            self.store,
            self.blobs,
            ca_pem=tls.ca_pem,
            revoked=revoked,
            audit=self.audit,
            lease_seconds=config.lease_seconds,
            cut_through=config.transfers.cut_through,
        )
        self.sites = sites = Sites(
            self.store,
            self.scheduler.journal,
            ca_pem=tls.ca_pem,
            lease_seconds=config.lease_seconds,
            revoked=revoked,
        )
        self.scheduler.recovery.heard = sites.heard  # leases judged by memory everywhere
        self.watch = HopWatch(
            self.store,
            self.scheduler.journal,
            self.scheduler.recovery,
            self.scheduler.clocks,
            deadlines=Deadlines(
                pickup_seconds=config.hop_pickup_seconds,
                progress_seconds=config.hop_progress_seconds,
                upload_seconds=config.hop_upload_seconds,
            ),
            interval_seconds=config.watch_interval_seconds or min(config.lease_seconds / 4, 5.0),
            leases=sites,
        )
        federation = tls.identity.federation
        # Long calls (streams, transfers) take at most ``workers - reserved_workers``
        # threads, so heartbeats and admin calls always find one.
        long_calls = config.workers - config.reserved_workers
        self.streams = StreamCaps(per_party=config.max_streams_per_site, total=long_calls // 2)
        self.uploads = StreamCaps(per_party=config.max_uploads_per_site, total=long_calls // 2)
        self._serving = False
        self.probe = ProbeServer(config.probe, ready=lambda: self._serving)
        self.metrics = MetricsEndpoint(
            config.metrics,
            self.store,
            lease_seconds=config.lease_seconds,
            lease_expiries=self.watch.expiries,
        )
        self.idle_uploads = IdleUploads(config.upload_idle_seconds)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            options=SERVER_OPTIONS,
            interceptors=[*self.metrics.interceptors, ErrorInterceptor(), self.idle_uploads],
            maximum_concurrent_rpcs=config.workers * 2,
        )
        self.quotas = SiteQuotas(
            self.store,
            quota_bytes=config.site_quota_bytes,
            ledger=config.state_dir / LEDGER_FILE,
        )
        """What each site holds at the coordinator, and its quota."""
        transfers = Transfers(
            self.store,
            self.blobs,
            self.scheduler,
            max_blob_bytes=config.max_blob_bytes,
            stall_seconds=config.transfers.stall_seconds,
        )
        site_gate = PeerGate(federation=federation, kind="site", revoked=revoked)
        admin_gate = PeerGate(federation=federation, kind="admin", revoked=revoked)
        site_pb2_grpc.add_SiteServiceServicer_to_server(
            SiteService(
                scheduler=self.scheduler,
                sites=sites,
                transfers=transfers,
                gate=site_gate,
                streams=self.streams,
                uploads=self.uploads,
                quotas=self.quotas,
                follows=StreamCaps(
                    per_party=config.transfers.max_follows_per_site, total=long_calls // 4
                ),
            ),
            self._server,
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(
                store=self.store,
                scheduler=self.scheduler,
                sites=sites,
                transfers=transfers,
                gate=admin_gate,
                streams=self.streams,
            ),
            self._server,
        )
        self._health = GatedHealth(site_gate, admin_gate)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.collector = Collector(
            self.store,
            config.blob_dir,
            grace_seconds=config.retention_grace_seconds,
            interval_seconds=config.gc_interval_seconds,
        )
        self.verifier = BlobVerifier(
            self.store, self.blobs, self.scheduler, interval_seconds=config.blob_verify_seconds
        )
        self.tls = ReloadingServerCredentials(config.tls, tls)
        try:
            self.port = self._server.add_secure_port(config.listen, self.tls.credentials())
        except RuntimeError as exc:
            self._close_state()
            raise TransportError(f"cannot listen on {config.listen}: {exc}") from None
        if self.port == 0:
            self._close_state()
            raise TransportError(
                f"cannot listen on {config.listen}: the address is in use (is another "
                "coordinator running?) or not available on this machine"
            )

    def start(self) -> None:
        """Starts serving and re-drives any run left running by a previous process.

        Raises:
            TransportError: The metrics address cannot be bound (nothing else started).
        """
        self.metrics.start()
        self.probe.start()
        self.scheduler.recover()
        if self.config.gc_interval_seconds > 0:
            self.collector.start()
        self.watch.start()
        self.verifier.start()
        self._server.start()
        for name in ("", *SERVICE_NAMES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        logger.info("coordinator listening on port %d (mTLS)", self.port)

    def stop(self, grace: float = 2.0) -> None:
        """Stops serving, waits up to ``grace`` seconds for calls in flight, closes the store."""
        self._serving = False
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.probe.stop()
        self.metrics.stop()
        self.watch.stop()
        try:
            self.sites.flush()  # the heartbeats since the last check, before the store closes
        except StoreError as exc:
            logger.error("the last heartbeats are not stored: %s", exc.message)
        self.collector.stop()
        self.verifier.stop()
        self.idle_uploads.stop()
        self._close_state()

    def _close_state(self) -> None:
        self.store.close()
        self.audit.close()
        self._state.release()

    def wait(self) -> None:
        """Blocks until the server stops."""
        self._server.wait_for_termination()

    def __enter__(self) -> CoordinatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_port_file(path: Path, port: int) -> None:
    """Publishes the bound port atomically (for ``listen = "...:0"``)."""
    atomic_write(path, f"{port}\n", mode=0o644)


def open_audit_log(state_dir: Path, tls: TlsMaterial) -> AuditLog:
    """The coordinator's audit log, signed with its TLS key (its only key).

    One file per key (``audit-<fingerprint>.jsonl``): a rotated TLS key starts a new chain
    instead of breaking the old one, which stays verifiable with the old certificate.
    """
    key = load_private_key(tls.key_pem, source="the coordinator's TLS key")
    name = f"audit-{key_fingerprint(key.public_key())[:16]}.jsonl"
    return AuditLog(state_dir / name, party=tls.identity.spiffe_id, signing_key=key)
