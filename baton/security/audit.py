"""A party's append-only audit log: JSON lines, hash-chained and signed entry by entry.

Each line is one entry, the canonical JSON (sorted keys, no spaces, ASCII) of ``seq``
(from 1, no gaps), ``time_ms``, ``party`` (SPIFFE id), ``event``, ``run_id``, ``hop``
(int or null), ``detail`` (a small flat dict of strings and numbers: digests, reason
codes, peer ids; never keys, weights or data), ``prev`` (hex SHA-256 of the previous
line's bytes, 64 zeros for the first), ``key`` (fingerprint of the signer's public key)
and ``sig`` (hex signature over ``"baton/v1 audit" 0x00 || canonical JSON of the entry
without sig``). Events Baton records: ``plan_accepted``, ``hop_received``, ``hop_sent``,
``hop_resumed``, ``training_resumed``, ``hop_rejected``, ``key_event``, ``site_registered``,
``run_created``; any name matching
:data:`EVENT_PATTERN` is accepted. Sites and the study owner sign with their Ed25519
key; the coordinator, which holds only its TLS key, with ECDSA P-256 (SHA-256, DER, low-S).

Key fingerprints: for Ed25519, :func:`baton.security.keys.fingerprint` (SHA-256 of the raw key, as
in hop manifests); for ECDSA, SHA-256 of the DER SubjectPublicKeyInfo.

What the chain proves: nobody without the signing key can edit, insert, delete or
reorder entries undetected. Cutting entries off the end is detectable only against a
head digest (:attr:`VerifyReport.head`) that someone kept elsewhere.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from baton.errors import AuditError, PkiError
from baton.io import fsync_dir
from baton.security.audit_entry import (
    EVENT_PATTERN,
    GENESIS,
    AuditEntry,
    DetailValue,
    canonical_json,
    detail_problem,
    parse_entry,
)
from baton.security.audit_repair import TRUNCATED, cut_partial_last_line
from baton.security.identity import Identity
from baton.security.keys import fingerprint

_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# The entry format lives in baton.security.audit_entry; its two names a log's readers need
# come with the log.
__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditLog",
    "AuditPublicKey",
    "AuditSigningKey",
    "VerifyReport",
    "key_fingerprint",
    "load_public_key",
    "verify_log",
]

AuditSigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
"""A key that signs an audit log (ECDSA keys MUST be P-256)."""
AuditPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
"""A key that verifies an audit log."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """What :func:`verify_log` found."""

    entries: int
    """Entries that verified: all of them if the log is intact, else those before the break."""
    first_break: str | None
    """The first problem, e.g. ``"line 7: prev does not match line 6"``; None if intact."""
    line: int | None
    """The line of the first problem, or None."""
    head: str
    """Digest of the last entry that verified (:data:`GENESIS` if none)."""
    last: AuditEntry | None
    """The last entry that verified, or None."""

    @property
    def ok(self) -> bool:
        """Whether every line verified."""
        return self.first_break is None


def key_fingerprint(key: AuditPublicKey) -> str:
    """Hex fingerprint of an audit key (see the module docstring)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return fingerprint(key)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(pem: bytes) -> AuditPublicKey:
    """Reads the key that verifies a log from a PEM public key or certificate.

    Raises:
        PkiError: Neither PEM form, or not an Ed25519 or ECDSA P-256 key.
    """
    key: object
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise PkiError("not a PEM public key or certificate") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise PkiError("an audit log is verified with an Ed25519 or ECDSA P-256 key")


class AuditLog:
    """Appends signed, chained entries to one party's log file.

    Constraints: one writer per file; a second ``AuditLog`` on the same file, in this
    process or another, MUST fail while the first is open (an exclusive ``flock``).
    Opening an existing file MUST verify it with ``signing_key``'s public key and refuse
    (``AuditError``) if it is broken, written by another key, or by another party; an
    intact file is continued where it ends. The one break it repairs is a partial last
    line (a write cut short by a crash or a full disk, which never completed an entry):
    it is cut off, back to the last complete signed entry, with a logged warning. A
    failed append removes what it wrote and leaves the log open, so appends succeed again
    once the disk has room. The file has mode 0600; every entry is
    written with one ``O_APPEND`` write and fsynced before :meth:`append` returns.

    Args:
        path: The log file; created if missing.
        party: The SPIFFE id of the party that keeps the log.
        signing_key: Its Ed25519 key, or (the coordinator) its ECDSA P-256 TLS key.
        clock: Current time in Unix milliseconds (for tests).

    Raises:
        AuditError: The file cannot be opened or locked, or its chain does not verify,
            or the key or party is not acceptable.
    """

    def __init__(
        self,
        path: Path,
        *,
        party: str,
        signing_key: AuditSigningKey,
        clock: Callable[[], int] | None = None,
    ) -> None:
        try:
            Identity.parse(party)
        except PkiError as exc:
            raise AuditError(f"audit log party: {exc.message}") from None
        if isinstance(signing_key, ec.EllipticCurvePrivateKey) and not isinstance(
            signing_key.curve, ec.SECP256R1
        ):
            raise AuditError("an ECDSA audit key must be on curve P-256")
        self.path = path
        self.party = party
        self._key = signing_key
        self._fingerprint = key_fingerprint(signing_key.public_key())
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._fd = self._open()
        try:
            report = verify_log(path, public_key=signing_key.public_key(), party=party)
            partial = report.first_break is not None and report.first_break.endswith(TRUNCATED)
            if partial and cut_partial_last_line(path, self._fd, report.entries):
                report = verify_log(path, public_key=signing_key.public_key(), party=party)
            if not report.ok:
                raise AuditError(f"refusing to append to {path}: {report.first_break}")
        except BaseException:
            self.close()
            raise
        self._seq, self._prev = report.entries, report.head

    def _open(self) -> int:
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AuditError(f"audit log {self.path} is open in another writer") from None
        try:
            os.fchmod(fd, 0o600)
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:
            os.close(fd)
            raise AuditError(f"cannot secure audit log {self.path}: {exc.strerror}") from None
        return fd

    def append(
        self,
        event: str,
        *,
        run_id: str = "",
        hop: int | None = None,
        detail: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Signs, writes and fsyncs one entry; returns it.

        Raises:
            ValueError: ``event``, ``hop`` or ``detail`` is not acceptable (see the module
                docstring).
            AuditError: The log is closed, or the write failed (a full disk): what was
                written of the entry is cut off again, so the log stays whole and open; if
                even that fails, the log is closed and repaired when it is next opened.
        """
        if not EVENT_PATTERN.fullmatch(event):
            raise ValueError(f"event {event!r} must match {EVENT_PATTERN.pattern}")
        if hop is not None and (isinstance(hop, bool) or not 0 <= hop < 1 << 32):
            raise ValueError(f"hop {hop!r} is not a hop index")
        items = dict(detail or {})
        problem = detail_problem(items)
        if problem is not None:
            raise ValueError(f"detail: {problem}")
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"audit log {self.path} is closed")
            unsigned = AuditEntry(
                seq=self._seq + 1,
                time_ms=self._clock(),
                party=self.party,
                event=event,
                run_id=run_id,
                hop=hop,
                detail=items,
                prev=self._prev,
                key=self._fingerprint,
                sig="",
            )
            entry = dataclasses.replace(unsigned, sig=self._sign(unsigned))
            line = entry.canonical() + b"\n"
            size = -1
            try:
                size = os.fstat(self._fd).st_size
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(0, f"short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                self._undo_write(size)
                raise AuditError(
                    f"cannot append to audit log {self.path}: {exc.strerror or exc}"
                ) from None
            self._seq, self._prev = entry.seq, entry.digest
            return entry

    def _undo_write(self, size: int) -> None:
        """Cuts the file back to ``size`` bytes after a failed write; closes the log if
        that fails too (the partial line is then cut off when the log is next opened)."""
        try:
            if size < 0:
                raise OSError(0, "size unknown")
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            self._close_locked()

    def _sign(self, entry: AuditEntry) -> str:
        data = entry.signed_bytes()
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data).hex()
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return encode_dss_signature(r, min(s, _P256_ORDER - s)).hex()

    def close(self) -> None:
        """Releases the file and its lock; later appends raise AuditError."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_log(path: Path, *, public_key: AuditPublicKey, party: str | None = None) -> VerifyReport:
    """Checks a whole log and reports the first line that breaks it.

    Per line, in order: it ends with a newline, is JSON, is canonical, has exactly the
    entry fields with the right types, names the same party as line 1 (or ``party``),
    has the next seq, chains to the line before, names ``public_key``'s fingerprint,
    and carries a valid signature by it.

    Args:
        path: The log file.
        public_key: The signer's Ed25519 or ECDSA P-256 public key.
        party: The party the log must belong to; by default, whoever line 1 names.

    Returns:
        The report; a broken log is a report, not an exception.

    Raises:
        AuditError: Only if the file cannot be read.
    """
    expected_key = key_fingerprint(public_key)
    count, head, last = 0, GENESIS, None

    def broken(number: int, why: str) -> VerifyReport:
        return VerifyReport(
            entries=count, first_break=f"line {number}: {why}", line=number, head=head, last=last
        )

    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                if not raw.endswith(b"\n"):
                    return broken(number, TRUNCATED)
                line = raw[:-1]
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    return broken(number, "not JSON")
                try:
                    canonical = canonical_json(obj) == line
                except (ValueError, TypeError):
                    canonical = False
                if not canonical:
                    return broken(number, "not canonical JSON")
                entry, problem = parse_entry(obj)
                if entry is None:
                    return broken(number, f"malformed entry: {problem}")
                if party is not None and entry.party != party:
                    return broken(number, f"party {entry.party} is not {party}")
                if last is not None and entry.party != last.party:
                    return broken(number, f"party {entry.party} differs from line 1")
                if entry.seq != count + 1:
                    if count == 0:
                        return broken(number, f"seq {entry.seq}, but the first entry is seq 1")
                    return broken(number, f"seq {entry.seq} follows {count}")
                if entry.prev != head:
                    if count == 0:
                        return broken(number, "prev of the first entry is not 64 zeros")
                    return broken(number, f"prev does not match line {number - 1}")
                if entry.key != expected_key:
                    return broken(number, f"signed by another key ({entry.key[:16]}...)")
                if not _signature_ok(public_key, bytes.fromhex(entry.sig), entry.signed_bytes()):
                    return broken(number, "bad signature")
                count, head, last = count + 1, hashlib.sha256(line).hexdigest(), entry
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror}") from None
    return VerifyReport(entries=count, first_break=None, line=None, head=head, last=last)


def _signature_ok(key: AuditPublicKey, sig: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, data)
            return True
        r, s = decode_dss_signature(sig)
        if encode_dss_signature(r, s) != sig or s > _P256_ORDER // 2:
            return False  # only the canonical low-S DER form: one signature per entry
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
