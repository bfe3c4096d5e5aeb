"""The site daemon: dials out to the coordinator, keeps its lease, and runs the hops it is given."""

from __future__ import annotations

import logging
import os
import threading
import time

import torch

from baton import __version__
from baton.domain import Capabilities
from baton.errors import ConfigError, Denied, PkiError, Rejected, ServerFault, TransportError
from baton.ml.data import profile_of
from baton.ml.task import site_task
from baton.probe import ProbeServer
from baton.security.audit import AuditLog
from baton.security.pin import coordinator_problem
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
from site_node.metrics import MeteredClient, SiteMetricsEndpoint
from site_node.outbox import Outbox, recipient_key
from site_node.retry import Backoff, HopFaults
from site_node.sweep import sweep_plaintext

logger = logging.getLogger(__name__)

HEARTBEAT_JOIN_SECONDS = 30.0
"""How long the end of a session waits for its heartbeat thread."""
STABLE_SESSION_SECONDS = 60.0
"""A session that lasted this long (or finished a hop) counts as a success: the back-off
and the count of failures in a row start again."""


class SiteDaemon:
    """A site's long-running process.

    Loading the TLS material and the local dataset happens in the constructor, so bad
    configuration fails before any connection is tried.

    Args:
        config: The site's configuration.
        max_attempts: Give up after this many failed sessions in a row (None: retry
            forever, as a daemon should).
        backoff: The pauses between sessions (default: from ``retry_initial_seconds`` to
            ``retry_max_seconds``, jittered).
    """

    def __init__(
        self,
        config: SiteConfig,
        *,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._cfg = config
        self._max_attempts = max_attempts
        self._backoff = backoff or Backoff(config.retry_initial_seconds, config.retry_max_seconds)
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
        self._registered = threading.Event()
        self.metrics = SiteMetricsEndpoint(config.metrics)
        """``/metrics`` while :meth:`run` runs (``[metrics]``; off by default)."""
        self.probe = ProbeServer(config.probe, ready=self._registered.is_set)
        """``/livez`` and ``/readyz`` while :meth:`run` runs (``[probe]``; off by default)."""
        self._stream: AssignmentStream | None = None
        self._done: set[tuple[str, int, str]] = set()
        self._progressed = False
        self._faults = HopFaults()
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        training = config.training
        for root in (config.work_dir, training.shared_dir):
            if root is not None:
                remove_stale_jobs(root, older_than_s=training.stale_job_hours * 3600)
        # Before the outbox's own sweep: its entries tell which hops are finished.
        shared = () if training.shared_dir is None else (training.shared_dir,)
        sweep_plaintext(config.work_dir, job_roots=shared)
        self._outbox = Outbox(config.work_dir)
        self._outbox.sweep(older_than_s=training.stale_job_hours * 3600)

    def stop(self) -> None:
        """Asks the daemon to finish: the current hop is abandoned, the stream closed."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def run(self) -> None:
        """Serves until ``stop()``; reconnects after jittered, exponential back-off.

        Transient failures (unreachable, too slow, busy) and sessions the coordinator
        ended by refusing to list assignments are retried; a session that lasted or
        finished a hop resets the back-off (see :mod:`site_node.retry`).

        Raises:
            PkiError: The coordinator refused this site (its certificate), or the server
                at the coordinator's address is not a coordinator (:mod:`baton.security.pin`).
            ConfigError: The coordinator refused this site's registration for good.
            TransportError: ``max_attempts`` sessions in a row failed, or the metrics or
                probe address cannot be bound.
        """
        self.metrics.start()
        try:
            self.probe.start()
            self._serve()
        finally:
            self.probe.stop()
            self.metrics.stop()

    def _serve(self) -> None:
        creds = channel_credentials(self._tls)
        backoff = self._backoff
        while not self._stop.is_set():
            started = time.monotonic()
            self._progressed = False
            detail = ""
            impostor = coordinator_problem(
                self._cfg.coordinator, self._tls, server_name=self._cfg.server_name
            )
            if impostor:
                raise PkiError(f"coordinator at {self._cfg.coordinator}: {impostor}")
            with secure_channel(
                self._cfg.coordinator, creds, server_name=self._cfg.server_name or None
            ) as channel:
                client = MeteredClient(
                    GrpcCoordinatorClient(
                        site_pb2_grpc.SiteServiceStub(channel), target=self._cfg.coordinator
                    )
                )
                try:
                    self._session(client)
                except Denied as exc:
                    if self._stop.is_set():
                        break
                    raise PkiError(exc.message) from None
                except (TransportError, Rejected) as exc:
                    if self._stop.is_set():
                        break
                    detail = exc.message
            stable = self._progressed or time.monotonic() - started >= STABLE_SESSION_SECONDS
            if stable:
                backoff.reset()
                if not detail:
                    continue  # the coordinator ended a good session: dial again at once
            delay = backoff.next_delay()
            if self._max_attempts is not None and backoff.failures >= self._max_attempts:
                raise TransportError(
                    f"coordinator at {self._cfg.coordinator} unreachable after "
                    f"{backoff.failures} attempts (last: {detail or 'the session ended at once'})",
                    site_id=self.site_id,
                )
            logger.warning(
                "coordinator at %s: %s; retrying in %.1fs (failure %d in a row)",
                self._cfg.coordinator,
                detail or "the session ended at once",
                delay,
                backoff.failures,
            )
            self._stop.wait(delay)

    def _session(self, client: CoordinatorClient) -> None:
        caps = Capabilities(cpu_count=os.cpu_count() or 1, memory_bytes=_memory_bytes())
        try:
            resp = client.register(
                Announcement(
                    capabilities=caps,
                    profile=self._profile,
                    software_version=__version__,
                    signing_certificate_pem=self._keys.signing_cert_pem.decode("ascii"),
                    encryption_certificate_pem=self._keys.encryption_cert_pem.decode("ascii"),
                )
            )
        except Rejected as exc:
            # The coordinator will refuse this announcement however often it is sent.
            raise ConfigError(
                f"the coordinator refuses this site's registration: {exc.message}"
            ) from None
        logger.info(
            "registered with the coordinator as %s (federation %s)", resp.site_id, resp.federation
        )
        self._registered.set()
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
                nxt = assignment.next_hop
                # A hop delivered again naming another recipient is to be re-sealed for it.
                key = (assignment.run_id, assignment.hop_index, (nxt and recipient_key(nxt)) or "")
                if assignment.evaluate_only and key in self._done:
                    continue
                logger.info(
                    "assigned hop %d of run %s (cycle %d)",
                    assignment.hop_index + 1,
                    assignment.run_id,
                    assignment.cycle + 1,
                )
                try:
                    # A hop the coordinator offers again (a retry, its lost copy sealed
                    # again) is run again: each stream sends an offer once.
                    runner.run(assignment)
                except ServerFault as exc:
                    if not self._faults.give_up(assignment.run_id, assignment.hop_index):
                        raise
                    # The coordinator answers but keeps failing this hop: end it once.
                    logger.error("giving up hop %d: %s", assignment.hop_index + 1, exc.message)
                    runner.fail(assignment, "coordinator_error", exc.message)
                self._faults.clear(assignment.run_id, assignment.hop_index)
                self._done.add(key)
                self._progressed = True
                self._outbox.sweep(older_than_s=self._cfg.training.stale_job_hours * 3600)
        except TransportError:
            if self._stop.is_set():  # stop() cancelled the stream
                return
            raise
        finally:
            self._registered.clear()
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
