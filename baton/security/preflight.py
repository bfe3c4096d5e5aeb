"""Preflight checks a party runs before it goes live: files, keys and the coordinator's TLS.

A :class:`Checklist` collects one :class:`Check` per item (``ok``, ``warn`` or ``FAIL``) and
gives a verdict. :func:`dial` tells WHY a coordinator cannot be reached, as one of:

- ``not listening``: nothing accepts TCP connections at the address (or it cannot be
  resolved, or nothing answers);
- ``TLS refused: name mismatch (cert names X, you dialled Y)``: the coordinator's
  certificate does not name the host dialled (or the config's ``server_name``);
- ``TLS refused: unknown CA``: its certificate is not from this federation's CA, or the
  coordinator does not accept this party's certificate;
- ``expired``: its certificate is outside its validity period.
- ``not a coordinator``: the certificate is from this federation's CA but names a site or
  an admin (see :mod:`baton.security.pin`).

It does a real TLS handshake with this party's certificate (ALPN ``h2``, as gRPC does),
accepting any server certificate so that it can look at it, and then checks that
certificate itself; nothing is sent but the HTTP/2 preface, so the coordinator sees a
client that connects and leaves.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

from cryptography import exceptions as crypto_exceptions
from cryptography import x509

from baton.errors import BatonError
from baton.security.pin import kind_problem, sni, split_target
from baton.security.tls import TlsFiles, TlsMaterial

if TYPE_CHECKING:
    from collections.abc import Callable

Status = Literal["ok", "warn", "FAIL"]
EXPIRY_WARNING: Final = dt.timedelta(days=30)
"""A certificate that expires sooner than this is a warning."""
_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@dataclass(frozen=True, slots=True)
class Check:
    """One item of a checklist."""

    name: str
    """What was checked, e.g. ``TLS certificate``."""
    status: Status
    """``ok``, ``warn`` (works, but look at it) or ``FAIL``."""
    detail: str
    """One line: what was found, and on failure what to do."""


@dataclass(slots=True)
class Checklist:
    """The checks of one preflight, in the order they ran."""

    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> Check:
        """Appends a check; returns it."""
        check = Check(name, status, detail)
        self.checks.append(check)
        return check

    @property
    def passed(self) -> bool:
        """No check failed (warnings pass)."""
        return all(c.status != "FAIL" for c in self.checks)

    def lines(self) -> list[str]:
        """One line per check, status first."""
        return [f"{c.status:<4}  {c.name}: {c.detail}" for c in self.checks]

    def verdict(self) -> str:
        """The closing line."""
        failed = sum(c.status == "FAIL" for c in self.checks)
        warned = sum(c.status == "warn" for c in self.checks)
        if failed:
            return f"NOT READY: {failed} check(s) failed, {warned} warning(s)"
        return f"READY: {len(self.checks)} checks passed, {warned} warning(s)"


class PartyConfig(Protocol):
    """What a site's or the owner's config tells the preflight."""

    @property
    def coordinator(self) -> str: ...
    @property
    def server_name(self) -> str: ...
    @property
    def tls(self) -> TlsFiles: ...
    @property
    def keys_dir(self) -> Path: ...


C = TypeVar("C", bound=PartyConfig)


def check_party(
    checks: Checklist, path: Path, load: Callable[[Path], C]
) -> tuple[C, TlsMaterial | None] | None:
    """Loads a party's config with ``load`` and checks its TLS files and keys.

    Returns:
        The config and its TLS material (None when the TLS files failed), or None when
        the config itself failed to load.
    """
    try:
        cfg = load(path)
    except BatonError as exc:
        checks.add("config", "FAIL", exc.message)
        return None
    checks.add("config", "ok", f"{path}: coordinator {cfg.coordinator}")
    material = check_tls_files(checks, cfg.tls)
    check_app_keys(checks, cfg.keys_dir, material)
    return cfg, material


def check_coordinator(
    checks: Checklist, cfg: PartyConfig, material: TlsMaterial | None, *, timeout: float
) -> bool:
    """Dials the coordinator the config names (see :func:`dial`); returns whether it answered."""
    if material is None:
        checks.add("coordinator", "FAIL", "not tried: this party's TLS files are not usable")
        return False
    found = dial(cfg.coordinator, cfg.tls, material, server_name=cfg.server_name, timeout=timeout)
    checks.add("coordinator", "ok" if found.ok else "FAIL", found.detail)
    return found.ok


def check_tls_files(checks: Checklist, files: TlsFiles) -> TlsMaterial | None:
    """Checks the TLS files: present, key private, chain to the CA, within validity.

    Returns:
        The loaded material, or None when a check failed.
    """
    check_private(checks, "TLS private key", files.key)
    try:
        material = files.load()
    except BatonError as exc:
        checks.add("TLS certificate", "FAIL", exc.message)
        return None
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    status: Status = "warn" if left < EXPIRY_WARNING else "ok"
    checks.add(
        "TLS certificate",
        status,
        f"{material.identity.spiffe_id}, issued by the CA in {files.ca}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days left)",
    )
    return material


def check_private(checks: Checklist, name: str, path: Path) -> None:
    """Checks that ``path`` exists and only its owner can read it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        checks.add(name, "FAIL", f"{path}: {exc.strerror}")
        return
    if mode & 0o077:
        checks.add(name, "FAIL", f"{path} has mode {mode:04o}; run: chmod 600 {path}")
    else:
        checks.add(name, "ok", f"{path} (mode {mode:04o})")


@dataclass(frozen=True, slots=True)
class Dial:
    """What :func:`dial` found."""

    ok: bool
    """The coordinator accepted a TLS session with this party's certificate."""
    detail: str
    """One line: on failure which of the five problems it was, and what to do."""


def dial(
    target: str,
    files: TlsFiles,
    material: TlsMaterial,
    *,
    server_name: str = "",
    timeout: float = 5.0,
) -> Dial:
    """Connects to the coordinator at ``target`` (``host:port``) and says what went wrong.

    Args:
        target: The address dialled, as in the config.
        files: This party's TLS files (the handshake needs them as files).
        material: The same, loaded and checked.
        server_name: The name expected in the coordinator's certificate, if not the host.
        timeout: Seconds for the TCP connection and the handshake each.
    """
    try:
        host, port = split_target(target)
    except ValueError:
        return Dial(False, f"not listening: {target!r} is not an address (host:port)")
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return Dial(False, f"not listening: the name {host!r} does not resolve")
    except TimeoutError:
        return Dial(False, f"not listening: no answer from {target} in {timeout:g} s (firewall?)")
    except OSError as exc:
        return Dial(False, f"not listening: nothing accepts connections at {target} ({exc})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we check the certificate ourselves, below
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    try:
        with context.wrap_socket(raw, server_hostname=sni(host)) as tls:
            der = tls.getpeercert(binary_form=True)
            problem = _judge(der, material, server_name or host, port)
            if problem:
                return Dial(False, problem)
            refused = _accepted(tls)
    except (ssl.SSLError, OSError) as exc:
        return Dial(False, f"TLS refused: the handshake with {target} failed ({exc})")
    finally:
        raw.close()
    if refused:
        return Dial(False, refused)
    return Dial(True, f"{target} accepts this party's certificate")


def _judge(der: bytes | None, material: TlsMaterial, expected: str, port: int) -> str:
    """Why the coordinator's certificate ``der`` is not acceptable, or ``""``."""
    if der is None:
        return "TLS refused: the coordinator sent no certificate"
    cert = x509.load_der_x509_certificate(der)
    ca = x509.load_pem_x509_certificate(material.ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        return (
            f"TLS refused: unknown CA (the coordinator's certificate is issued by "
            f"{cert.issuer.rfc4514_string()!r}, not by this federation's CA)"
        )
    now = dt.datetime.now(dt.UTC)
    until, since = cert.not_valid_after_utc, cert.not_valid_before_utc
    if now > until:
        return f"expired: the coordinator's certificate expired on {until:%Y-%m-%d %H:%M} UTC"
    if now < since:
        return f"expired: the coordinator's certificate is valid only from {since:%Y-%m-%d %H:%M}"
    not_coordinator = kind_problem(cert, material.identity.federation)
    if not_coordinator:
        return not_coordinator
    names = _names(cert)
    if not _matches(expected, names):
        shown = ", ".join(names) or "no DNS or IP name"
        first = names[0] if names else "a name it holds"
        return (
            f"TLS refused: name mismatch (cert names {shown}, you dialled {expected}); "
            f'dial "{_join(first, port)}", or reissue its certificate with {expected}'
        )
    return ""


def _accepted(tls: ssl.SSLSocket) -> str:
    """Sends the HTTP/2 preface and reads: TLS 1.3 servers refuse client certs only now."""
    try:
        tls.sendall(_H2_PREFACE)
        tls.recv(1)
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        if "expired" in reason:
            return "expired: the coordinator refused this party's certificate as expired"
        return (
            "TLS refused: unknown CA (the coordinator does not accept this party's "
            f"certificate: {reason})"
        )
    except OSError as exc:
        return f"TLS refused: the coordinator closed the connection ({exc})"
    return ""


def _names(cert: x509.Certificate) -> list[str]:
    """The DNS and IP names a server certificate holds."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    return [*dns, *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _matches(host: str, names: list[str]) -> bool:
    """Whether ``host`` is one of ``names`` (IPs compared as addresses, DNS without case)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in {n.lower() for n in names}
    return any(_ip(n) == ip for n in names)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_app_keys(checks: Checklist, keys_dir: Path, material: TlsMaterial | None) -> None:
    """Checks the signing and encryption keys: private, certified by the CA, naming this party."""
    from baton.security.keys import ENCRYPTION_KEY_FILE, SIGNING_KEY_FILE
    from baton.security.sealing import AppKeys, check_party

    check_private(checks, "signing key", keys_dir / SIGNING_KEY_FILE)
    check_private(checks, "encryption key", keys_dir / ENCRYPTION_KEY_FILE)
    try:
        keys = AppKeys.load(keys_dir)
        if material is not None:
            check_party(
                material.ca_pem, keys.signing_cert_pem, keys.encryption_cert_pem, material.identity
            )
    except BatonError as exc:
        checks.add("key certificates", "FAIL", exc.message)
        return
    whose = "this party" if material is None else material.identity.spiffe_id
    checks.add("key certificates", "ok", f"signing and encryption keys of {whose} in {keys_dir}")


def unreachable(details: str) -> str:
    """Which of the five problems gRPC's UNAVAILABLE ``details`` describe, as one phrase.

    For the clients' "coordinator unreachable" errors; ``site-node check`` and ``baton
    check`` say more (the names the certificate holds). ``""`` when the details name none.
    """
    text = details.lower()
    if "unsupported certificate purpose" in text:
        return "not a coordinator: the server's certificate is not a TLS server certificate"
    if "hostname verification" in text:
        return "TLS refused: name mismatch (run the preflight check to see the names it holds)"
    if "expired" in text:
        return "expired: a certificate is outside its validity period"
    if "certificate_verify_failed" in text or "unknown ca" in text or "unknown_ca" in text:
        return "TLS refused: unknown CA (a certificate is not from this federation's CA)"
    if "connection refused" in text or "failed to connect to remote host" in text:
        return "not listening"
    if "dns resolution failed" in text or "name or service not known" in text:
        return "not listening: the name does not resolve"
    return ""
