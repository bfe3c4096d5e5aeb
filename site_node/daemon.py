"""The site daemon: dials out to the coordinator, keeps its lease, and runs the hops it is given."""

from __future__ import annotations

import logging
import os
import threading

import torch

from baton import __version__
from baton.domain import Capabilities
from baton.errors import ConfigError, Denied, PkiError, TransportError
from baton.ml.data import profile_of
from baton.ml.task import site_task
from baton.security.audit import AuditLog
from baton.security.replay import SqliteReplayGuard
from baton.security.revocation import revocation_check
from baton.security.sealing import AppKeys, check_party
from baton.security.tls import channel_credentials
from baton.v1 import site_pb2_grpc
from baton.wire.channel import secure_channel
from site_node.client import (
    Announcement,
    AssignmentStream,
    CoordinatorClient,
    GrpcCoordinatorClient,
)
from site_node.config import SiteConfig
from site_node.hop import HopRunner, LocalData
from site_node.local_training import remove_stale_jobs

logger = logging.getLogger(__name__)

HEARTBEAT_JOIN_SECONDS = 30.0
"""How long the end of a session waits for its heartbeat thread."""


class SiteDaemon:
    """A site's long-running process.

    Loading the TLS material and the local dataset happens in the constructor, so bad
    configuration fails before any connection is tried.

    Args:
        config: The site's configuration.
        max_attempts: Give up after this many failed connection attempts in a row
            (None: retry forever, as a daemon should).
    """

    def __init__(self, config: SiteConfig, *, max_attempts: int | None = None) -> None:
        self._cfg = config
        self._max_attempts = max_attempts
        self._tls = config.tls.load()
        if self._tls.identity.kind != "site":
            raise PkiError(
                f"{config.tls.cert}: certificate is for {self._tls.identity.spiffe_id}, not a site"
            )
        self.site_id = self._tls.identity.name
        self._keys = AppKeys.load(config.keys_dir)
        check_party(
            self._tls.ca_pem,
            self._keys.signing_cert_pem,
            self._keys.encryption_cert_pem,
            self._tls.identity,
        )
        task = site_task(config.data_dir)
        schema, data = task.read_site_data(config.data_dir)
        self._local = LocalData(schema=schema, data=data, task=task, site_dir=config.data_dir)
        self._profile = profile_of(schema, data)
        config.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._replay = SqliteReplayGuard(config.work_dir / "replay.db")
        except OSError as exc:
            raise ConfigError(f"{config.work_dir / 'replay.db'}: cannot open ({exc})") from None
        self._revoked = revocation_check(config.crl, self._tls.ca_pem)
        self._audit = AuditLog(
            config.work_dir / "audit.jsonl",
            party=self._tls.identity.spiffe_id,
            signing_key=self._keys.signing_key,
        )
        self._stop = threading.Event()
        self._stream: AssignmentStream | None = None
        self._done: set[tuple[str, int]] = set()
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        training = config.training
        for root in (config.work_dir, training.shared_dir):
            if root is not None:
                remove_stale_jobs(root, older_than_s=training.stale_job_hours * 3600)

    def stop(self) -> None:
        """Asks the daemon to finish: the current hop is abandoned, the stream closed."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def run(self) -> None:
        """Serves until ``stop()``; reconnects with exponential back-off.

        Raises:
            TransportError: the coordinator stayed unreachable for ``max_attempts`` tries.
        """
        creds = channel_credentials(self._tls)
        delay = self._cfg.retry_initial_seconds
        failures = 0
        while not self._stop.is_set():
            with secure_channel(
                self._cfg.coordinator, creds, server_name=self._cfg.server_name or None
            ) as channel:
                client = GrpcCoordinatorClient(
                    site_pb2_grpc.SiteServiceStub(channel), target=self._cfg.coordinator
                )
                try:
                    self._session(client)
                    failures, delay = 0, self._cfg.retry_initial_seconds
                    continue
                except (TransportError, Denied) as exc:
                    if self._stop.is_set():
                        break
                    if isinstance(exc, Denied):
                        raise PkiError(exc.message) from None
                    failures += 1
                    detail = exc.message
            if self._max_attempts is not None and failures >= self._max_attempts:
                raise TransportError(
                    f"coordinator at {self._cfg.coordinator} unreachable after {failures} attempts",
                    site_id=self.site_id,
                )
            logger.warning(
                "coordinator at %s: %s; retrying in %.1fs (attempt %d)",
                self._cfg.coordinator,
                detail,
                delay,
                failures,
            )
            self._stop.wait(delay)
            delay = min(delay * 2, self._cfg.retry_max_seconds)

    def _session(self, client: CoordinatorClient) -> None:
        caps = Capabilities(cpu_count=os.cpu_count() or 1, memory_bytes=_memory_bytes())
        resp = client.register(
            Announcement(
                capabilities=caps,
                profile=self._profile,
                software_version=__version__,
                signing_certificate_pem=self._keys.signing_cert_pem.decode("ascii"),
                encryption_certificate_pem=self._keys.encryption_cert_pem.decode("ascii"),
            )
        )
        logger.info(
            "registered with the coordinator as %s (federation %s)", resp.site_id, resp.federation
        )
        session_over = threading.Event()
        beat = threading.Thread(
            target=self._heartbeats, args=(client, session_over), name="heartbeat", daemon=True
        )
        beat.start()
        runner = HopRunner(
            client,
            tls=self._tls,
            keys=self._keys,
            local=self._local,
            work_dir=self._cfg.work_dir,
            replay=self._replay,
            audit=self._audit,
            revoked=self._revoked,
            training=self._cfg.training,
            data_gate=self._cfg.data,
            stopping=self._stop.is_set,
        )
        try:
            stream = client.watch_assignments()
            self._stream = stream
            if self._stop.is_set():
                return
            for assignment in stream:
                key = (assignment.run_id, assignment.hop_index)
                if key in self._done:
                    continue
                logger.info(
                    "assigned hop %d of run %s (cycle %d)",
                    assignment.hop_index,
                    assignment.run_id,
                    assignment.cycle,
                )
                runner.run(assignment)
                self._done.add(key)
        except TransportError:
            if self._stop.is_set():  # stop() cancelled the stream
                return
            raise
        finally:
            self._stream = None
            session_over.set()
            beat.join(timeout=HEARTBEAT_JOIN_SECONDS)

    def _heartbeats(self, client: CoordinatorClient, session_over: threading.Event) -> None:
        while not session_over.wait(self._cfg.heartbeat_seconds):
            try:
                client.heartbeat()
            except (TransportError, Denied) as exc:
                logger.debug("heartbeat failed: %s", exc.message)


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
