"""Certificate revocation: a standard X.509 CRL signed by the federation CA, and its reader.

The CA operator revokes a certificate with :func:`revoke` (``baton pki revoke``), which
re-issues the whole CRL with the certificate's serial added, a higher CRL number, and a
``next_update`` some days ahead; :func:`issue_crl` (``baton pki crl``) re-issues it with no
new entry, to create an empty CRL or keep one fresh. The coordinator reads it through a
:class:`CrlWatcher`, which picks up a replaced file without a restart.

Serials are what a CRL names; Baton's serials are 159 random bits from one CA, so a serial
names one certificate. A CRL may name TLS certificates and application-key certificates
alike (both are issued by the federation CA).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from baton.errors import PkiError
from baton.io import atomic_write
from baton.security.identity import DEFAULT_CRL_DAYS, REASONS
from baton.security.pki import load_ca, load_certificate, read_file
from baton.wire.channel import file_stamp

logger = logging.getLogger(__name__)

DEFAULT_RELOAD_SECONDS: Final = 5.0
"""How often a :class:`CrlWatcher` looks at its file at most."""
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""How far in the future a CRL's ``last_update`` may be, for slightly fast CA clocks."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Crl:
    """A CRL whose signature was verified against the federation CA."""

    number: int
    """The CRL number; each CRL the CA issues has a higher one."""
    last_update: dt.datetime
    """When it was issued (UTC)."""
    next_update: dt.datetime
    """When it goes stale (UTC); a stale CRL is refused."""
    serials: frozenset[int]
    """Serial numbers of the revoked certificates."""

    def is_revoked(self, cert_pem_or_serial: bytes | str | int) -> bool:
        """Whether the certificate (PEM, as bytes or text) or serial number is revoked.

        Raises:
            PkiError: If a PEM argument is not a valid certificate.
        """
        if isinstance(cert_pem_or_serial, int):
            return cert_pem_or_serial in self.serials
        pem = cert_pem_or_serial
        cert = load_certificate(pem.encode() if isinstance(pem, str) else pem, source="a peer")
        return cert.serial_number in self.serials

    def check_fresh(self, now: dt.datetime | None = None) -> None:
        """Raises PkiError if the CRL is stale (past its ``next_update``) at ``now``."""
        now = now or dt.datetime.now(dt.UTC)
        if now > self.next_update:
            raise PkiError(
                f"CRL number {self.number} went stale on {self.next_update:%Y-%m-%d %H:%M} UTC; "
                "the CA operator must issue a fresh one (baton pki crl)"
            )


def load_crl(path: Path, ca_pem: bytes, *, now: dt.datetime | None = None) -> Crl:
    """Reads a CRL (PEM or DER), verifies it was signed by the CA, and that it is fresh.

    A stale CRL (past its ``next_update``) is an error, not a CRL to trust as it is. Trusting
    it would let anyone who keeps a newer CRL from being installed keep a revoked key
    working indefinitely, and a stale list may lack revocations made since. The price is
    availability: a coordinator whose CRL goes stale refuses every peer until the CA
    operator issues a fresh one, so the operator MUST re-issue it before ``next_update``.

    Args:
        path: The CRL file.
        ca_pem: The federation CA certificate (PEM) that must have signed it.
        now: The time to judge freshness at; defaults to now.

    Returns:
        The verified CRL.

    Raises:
        PkiError: If the file is missing, unreadable or malformed, was not signed by the CA,
            lacks a CRL number or next update, is not yet valid, or is stale.
    """
    ca_cert = load_certificate(ca_pem, source="the CA certificate")
    crl = _crl_from(_read_crl(path), ca_cert, source=f"CRL {path}", now=now)
    try:
        crl.check_fresh(now)
    except PkiError as exc:
        raise PkiError(f"{path}: {exc.message}") from None
    return crl


def revoke(
    ca_dir: Path,
    crl_path: Path,
    cert_pem: bytes,
    *,
    reason: str = "unspecified",
    days: int = DEFAULT_CRL_DAYS,
) -> None:
    """Adds a certificate's serial to the CRL at ``crl_path``, signed by the CA in ``ca_dir``.

    The CRL is created if missing. Each call issues a new CRL with the next CRL number and a
    ``next_update`` ``days`` ahead; revoking a certificate already listed keeps its original
    entry (and still refreshes the CRL). The file is replaced atomically.

    Args:
        ca_dir: Directory holding ``ca.pem`` and ``ca.key``.
        crl_path: The CRL file (PEM) to create or update.
        cert_pem: The certificate to revoke; it MUST have been issued by this CA.
        reason: One of :data:`REASONS`.
        days: How long the new CRL stays fresh.

    Raises:
        PkiError: If the CA is unusable, the certificate was not issued by it, the reason
            is unknown, the existing CRL is not this CA's or is malformed, or writing fails.
    """
    if reason not in REASONS:
        raise PkiError(f"unknown revocation reason {reason!r}; choose one of {', '.join(REASONS)}")
    _, ca_cert, ca_key = load_ca(ca_dir)
    cert = load_certificate(cert_pem, source="the certificate to revoke")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        raise PkiError(f"the certificate to revoke was not issued by the CA in {ca_dir}") from None
    entry = x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
    entry = entry.revocation_date(dt.datetime.now(dt.UTC))
    if reason != "unspecified":  # RFC 5280: omit the reason code rather than say unspecified
        entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags(reason)), critical=False)
    _issue(ca_cert, ca_key, crl_path, days=days, new=entry.build())


def issue_crl(ca_dir: Path, crl_path: Path, *, days: int = DEFAULT_CRL_DAYS) -> Crl:
    """Issues the CRL at ``crl_path`` afresh: same entries (none if it is new), next number.

    Args:
        ca_dir: Directory holding ``ca.pem`` and ``ca.key``.
        crl_path: The CRL file (PEM) to create or refresh.
        days: How long the new CRL stays fresh.

    Returns:
        The CRL written.

    Raises:
        PkiError: As :func:`revoke` does.
    """
    _, ca_cert, ca_key = load_ca(ca_dir)
    return _issue(ca_cert, ca_key, crl_path, days=days, new=None)


class CrlWatcher:
    """The current CRL of a file that may be replaced while the process runs.

    The file is loaded when the watcher is made (so a missing or bad CRL stops a process
    at start-up), then looked at again at most every ``interval`` seconds: a change of
    modification time, size or inode reloads it. A replacement that fails to load (not
    signed by the CA, malformed, removed, stale) or that has a lower CRL number than the
    one in force (a rollback to a list without the latest revocations) is logged as a
    warning once, and the last good CRL stays in force until it goes stale; a stale CRL
    makes every check raise PkiError (see :func:`load_crl` for why). Safe to call from
    many threads.

    Args:
        path: The CRL file.
        ca_pem: The federation CA certificate (PEM).
        interval: Seconds between looks at the file (0: at every check).
        clock: Monotonic clock, for tests.

    Raises:
        PkiError: If the file cannot be loaded at start-up (see :func:`load_crl`).
    """

    def __init__(
        self,
        path: Path,
        ca_pem: bytes,
        *,
        interval: float = DEFAULT_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._ca_pem = ca_pem
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = file_stamp(path)
        self._crl = load_crl(path, ca_pem)
        self._checked = clock()
        self._failed_stamp: tuple[int, ...] | None = None
        self._stale_logged = False

    @property
    def crl(self) -> Crl:
        """The CRL in force, after looking for a new file if ``interval`` has passed.

        Raises:
            PkiError: If the CRL in force is stale.
        """
        with self._lock:
            if self._clock() - self._checked >= self._interval:
                self._checked = self._clock()
                self._maybe_reload()
            crl = self._crl
            try:
                crl.check_fresh()
            except PkiError as exc:
                if not self._stale_logged:
                    logger.error("every peer is refused: %s", exc.message)
                    self._stale_logged = True
                raise
            return crl

    def is_revoked(self, cert_pem_or_serial: bytes | str | int) -> bool:
        """Whether the certificate or serial is revoked by the CRL in force.

        Raises:
            PkiError: If the CRL in force is stale, or a PEM argument is malformed.
        """
        return self.crl.is_revoked(cert_pem_or_serial)

    def _maybe_reload(self) -> None:
        stamp = file_stamp(self._path)
        if stamp == self._stamp:
            return
        try:
            crl = load_crl(self._path, self._ca_pem)
            if crl.number < self._crl.number:
                raise PkiError(
                    f"CRL {self._path} has number {crl.number}, older than the one in force"
                )
        except PkiError as exc:
            if stamp != self._failed_stamp:
                logger.warning("keeping CRL number %d: %s", self._crl.number, exc.message)
                self._failed_stamp = stamp
            return
        self._stamp, self._crl, self._failed_stamp = stamp, crl, None
        self._stale_logged = False
        logger.info(
            "loaded CRL number %d from %s: %d revoked", crl.number, self._path, len(crl.serials)
        )


def _read_crl(path: Path) -> x509.CertificateRevocationList:
    """Parses a PEM or DER CRL file, without checking who signed it."""
    data = read_file(path, role="CRL")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise PkiError(
            f"CRL {path} is not a valid PEM or DER certificate revocation list"
        ) from None


def _crl_from(
    crl: x509.CertificateRevocationList,
    ca_cert: x509.Certificate,
    *,
    source: str,
    now: dt.datetime | None = None,
) -> Crl:
    """Checks a parsed CRL's issuer, signature, number and dates; returns what it says."""
    public_key = ca_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PkiError("the CA certificate does not hold an ECDSA key")
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(public_key):
        raise PkiError(f"{source} was not signed by the federation CA")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        serials = frozenset(entry.serial_number for entry in crl)
    except x509.ExtensionNotFound:
        raise PkiError(f"{source} has no CRL number") from None
    except ValueError:
        raise PkiError(f"{source} has a malformed extension or entry") from None
    next_update = crl.next_update_utc
    if next_update is None:
        raise PkiError(f"{source} has no next update, so it could never go stale")
    now = now or dt.datetime.now(dt.UTC)
    if crl.last_update_utc > now + _CLOCK_SKEW:
        raise PkiError(f"{source} is not valid before {crl.last_update_utc:%Y-%m-%d %H:%M} UTC")
    return Crl(
        number=number, last_update=crl.last_update_utc, next_update=next_update, serials=serials
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    crl_path: Path,
    *,
    days: int,
    new: x509.RevokedCertificate | None,
) -> Crl:
    """Signs and writes the CRL at ``crl_path``: its old entries, plus ``new`` if not listed."""
    if days < 1:
        raise PkiError(f"the CRL must stay fresh at least one day, not {days}")
    entries: list[x509.RevokedCertificate] = []
    number = 1
    if crl_path.exists():
        old = _read_crl(crl_path)
        # A stale CRL may be renewed; only its signature and form must be right.
        number = _crl_from(old, ca_cert, source=f"existing CRL {crl_path}").number + 1
        entries = list(old)
    if new is not None and all(e.serial_number != new.serial_number for e in entries):
        entries.append(new)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_crl(crl_path, crl.public_bytes(serialization.Encoding.PEM))
    return _crl_from(crl, ca_cert, source=f"CRL {crl_path}")


def _write_crl(path: Path, data: bytes) -> None:
    """Replaces the CRL at ``path`` (mode 0644) so readers see the old or the new file."""
    try:
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise PkiError(f"cannot write CRL {path}: {exc.strerror}") from None


def revocation_check(
    crl: Path | None, ca_pem: bytes, *, interval: float = 5.0
) -> Callable[[bytes | str | int], bool]:
    """Whether a certificate (PEM, or its serial number) is revoked: by the CRL at ``crl``
    (watched for changes), or never when no CRL is configured.

    Raises:
        PkiError: A CRL is configured but missing, stale, or not signed by the CA.
    """
    if crl is None:
        return lambda cert_pem: False
    watcher = CrlWatcher(crl, ca_pem, interval=interval)
    logger.info(
        "revocation list %s: number %d, %d revoked",
        crl,
        watcher.crl.number,
        len(watcher.crl.serials),
    )
    return watcher.is_revoked
