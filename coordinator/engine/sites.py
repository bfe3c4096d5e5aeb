"""The site registry: who registered, with which certified keys, and whose lease is live."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from baton.domain import BlobRef, Capabilities, DataProfile
from baton.errors import ConflictError, NotFoundError, PkiError, SealError
from baton.security.manifest import verify_manifest
from baton.security.pki import Identity
from baton.security.sealing import check_party
from coordinator.engine.journal import Journal
from coordinator.store.base import SiteRecord, Store

logger = logging.getLogger(__name__)


class Sites:
    """Registers sites, renews their leases, and checks what they sign.

    Heartbeats renew leases in memory only (a heartbeat never waits for the database);
    :meth:`flush` writes them in one transaction (the hop watch calls it every check, and
    the server at shutdown), and :meth:`last_seen` is what the leases are judged by. A
    crash loses at most one watch interval of renewals, and a restarted coordinator
    counts every hop's lease from its start anyway, so none expires falsely.

    Args:
        store: Durable state.
        journal: Where registrations and rejected manifests are recorded.
        ca_pem: The federation CA, to check the sites' application-key certificates.
        lease_seconds: Lease granted per registration or heartbeat.
        revoked: Whether a certificate (PEM) is revoked; no site registers one.
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        ca_pem: bytes,
        lease_seconds: float,
        revoked: Callable[[bytes], bool] = lambda cert_pem: False,
    ) -> None:
        self._store = store
        self._journal = journal
        self._ca_pem = ca_pem
        self.lease_seconds = lease_seconds
        self._revoked = revoked
        self._lock = threading.Lock()
        self._known: set[str] | None = None  # registered sites, read once
        self._unflushed: dict[str, int] = {}  # heartbeats since the last flush

    def register(
        self,
        identity: Identity,
        *,
        certificate_pem: str,
        signing_certificate_pem: str,
        encryption_certificate_pem: str,
        capabilities: Capabilities,
        profile: DataProfile,
        software_version: str,
    ) -> None:
        """Records (or renews) a site's registration.

        Raises:
            PkiError: the application-key certificates are not the CA's for this very site
                (other sites will seal to them and verify with them), or are revoked.
        """
        check_party(self._ca_pem, signing_certificate_pem, encryption_certificate_pem, identity)
        if any(
            pem and self._revoked(pem.encode())
            for pem in (signing_certificate_pem, encryption_certificate_pem)
        ):
            raise PkiError(f"site {identity.name} registered a revoked application certificate")
        now = self._journal.clock()
        with self._journal.transaction():
            self._store.upsert_site(
                SiteRecord(
                    site_id=identity.name,
                    certificate_pem=certificate_pem,
                    capabilities=capabilities,
                    profile=profile,
                    software_version=software_version,
                    signing_certificate_pem=signing_certificate_pem,
                    encryption_certificate_pem=encryption_certificate_pem,
                    registered_ms=now,
                    last_seen_ms=now,
                )
            )
            self._journal.record("site_registered", "", detail={"site": identity.name})
        with self._lock:
            if self._known is not None:
                self._known.add(identity.name)
        logger.info("site %s registered (software %s)", identity.name, software_version or "?")

    def require_registered(self, site_id: str) -> None:
        """Raises ConflictError unless ``site_id`` has registered."""
        try:
            self._store.get_site(site_id)
        except NotFoundError:
            raise ConflictError(f"site {site_id} must register first", site_id=site_id) from None

    def heartbeat(self, site_id: str) -> int:
        """Renews a registered site's lease; returns when it expires (Unix ms).

        Raises:
            ConflictError: the site never registered.
        """
        if self._known is None:
            known = {s.site_id for s in self._store.list_sites()}
            with self._lock:
                self._known = known if self._known is None else self._known | known
        now = self._journal.clock()
        with self._lock:
            if site_id not in self._known:
                raise ConflictError(f"site {site_id} must register first", site_id=site_id)
            self._unflushed[site_id] = now
        return now + int(self.lease_seconds * 1000)

    def last_seen(self) -> dict[str, int]:
        """Each registered site's last heartbeat or registration (Unix ms), flushed or not."""
        return {s.site_id: s.last_seen_ms for s in self._sites()}

    def heard(self, site_id: str) -> int:
        """The site's last heartbeat not yet flushed to the store (Unix ms; 0 if none)."""
        with self._lock:
            return self._unflushed.get(site_id, 0)

    def _sites(self) -> list[SiteRecord]:
        """Every registered site, its ``last_seen_ms`` including unflushed heartbeats."""
        sites = self._store.list_sites()
        with self._lock:
            pending = dict(self._unflushed)
        return [
            replace(s, last_seen_ms=max(s.last_seen_ms, pending.get(s.site_id, 0))) for s in sites
        ]

    def flush(self) -> int:
        """Writes the heartbeats received since the last flush, in one transaction;
        returns how many sites it wrote. On a store error they stay for the next flush.

        Raises:
            StoreError: The database refused the write.
        """
        with self._lock:
            batch, self._unflushed = self._unflushed, {}
        if not batch:
            return 0
        try:
            self._store.touch_sites(batch)
        except BaseException:
            with self._lock:
                for site_id, ms in batch.items():
                    self._unflushed[site_id] = max(self._unflushed.get(site_id, 0), ms)
            raise
        return len(batch)

    def listing(self) -> list[tuple[SiteRecord, bool]]:
        """Every registered site, with whether its lease is live."""
        now = self._journal.clock()
        lease_ms = int(self.lease_seconds * 1000)
        return [(s, now - s.last_seen_ms <= lease_ms) for s in self._sites()]

    def verify_output(
        self, identity: Identity, run_id: str, hop_index: int, output: BlobRef, manifest: bytes
    ) -> None:
        """Refuses garbage early: the manifest must be signed by the site's certified key and
        describe exactly this hop and this blob. (The coordinator holds no key that opens
        the blob; recipients check everything again.) A rejection is audited.

        Raises:
            SealError: the manifest does not verify, or describes another hop or blob.
        """
        try:
            self._verify_output(identity, run_id, hop_index, output, manifest)
        except SealError as exc:
            self._journal.record(
                "manifest_rejected",
                run_id,
                hop=hop_index,
                detail={"site": identity.name, "check": exc.reason},
            )
            raise

    def _verify_output(
        self, identity: Identity, run_id: str, hop_index: int, output: BlobRef, manifest: bytes
    ) -> None:
        site = self._store.get_site(identity.name)
        keys = check_party(
            self._ca_pem, site.signing_certificate_pem, site.encryption_certificate_pem, identity
        )
        got = verify_manifest(manifest, sender_key=keys.signing_key)
        if (got.run_id, got.hop_index, got.sender) != (run_id, hop_index, identity.spiffe_id):
            raise SealError("wrong_context", "the manifest describes another hop or sender")
        if (got.ciphertext_sha256, got.ciphertext_length) != (output.blob_id, output.size):
            raise SealError("ciphertext_hash", "the manifest describes another blob")
