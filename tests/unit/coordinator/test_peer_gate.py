"""The peer gate parses each certificate once but asks the CRL in force on every call."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.errors import PkiError
from baton.security.pki import Identity, create_ca, issue
from baton.security.revocation import issue_crl, revocation_check, revoke
from baton.security.tls13 import TLS_VERSION
from coordinator.api.auth import ParsedCertificates, PeerGate

TLS13 = TLS_VERSION.encode()


class _Context:
    """The part of a gRPC servicer context the gate reads: the TLS auth properties."""

    def __init__(self, cert_pem: bytes, tls: bytes = TLS13) -> None:
        self._properties = {"x509_pem_cert": [cert_pem], "ssl_tls_version": [tls]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._properties


def _site(tmp_path: Path, name: str) -> bytes:
    identity = Identity(federation="fed", kind="site", name=name)
    return issue(tmp_path / "ca", tmp_path / name, identity).cert.read_bytes()


def test_a_revoked_certificate_is_refused_after_it_was_cached(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", "fed")
    crl = tmp_path / "crl.pem"
    issue_crl(tmp_path / "ca", crl)
    ca_pem = (tmp_path / "ca" / "ca.pem").read_bytes()
    gate = PeerGate(
        federation="fed", kind="site", revoked=revocation_check(crl, ca_pem, interval=0)
    )
    ash, birch = _site(tmp_path, "ash"), _site(tmp_path, "birch")
    assert gate.identify(_Context(ash)).name == "ash"  # type: ignore[arg-type]
    assert gate.identify(_Context(birch)).name == "birch"  # type: ignore[arg-type]
    assert len(gate.parsed) == 2
    revoke(tmp_path / "ca", crl, ash)
    with pytest.raises(PkiError, match="the TLS certificate of site ash is revoked"):
        gate.identify(_Context(ash))  # type: ignore[arg-type]
    assert gate.identify(_Context(birch)).name == "birch"  # type: ignore[arg-type]
    assert len(gate.parsed) == 2  # served from the cache, not parsed again


def test_tls_version_and_kind_are_checked_on_every_call(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", "fed")
    ash = _site(tmp_path, "ash")
    sites, admins = (
        PeerGate(federation="fed", kind="site"),
        PeerGate(federation="fed", kind="admin"),
    )
    assert sites.identify(_Context(ash)).name == "ash"  # type: ignore[arg-type]
    with pytest.raises(PkiError, match=r"connected with TLS1\.2; only "):
        sites.identify(_Context(ash, b"TLS1.2"))  # type: ignore[arg-type]
    admins.parsed.parse(ash)
    with pytest.raises(PkiError, match="is not a admin of federation 'fed'"):
        admins.identify(_Context(ash))  # type: ignore[arg-type]


def test_the_least_recently_used_certificate_is_dropped(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", "fed")
    a, b, c = (_site(tmp_path, name) for name in ("a", "b", "c"))
    parsed = ParsedCertificates(size=2)
    first, second = parsed.parse(a), parsed.parse(b)
    assert parsed.parse(a) is first  # a hit, and now the most recent
    parsed.parse(c)  # drops b
    assert len(parsed) == 2
    assert parsed.parse(a) is first
    again = parsed.parse(b)  # parsed anew: equal, not the kept object
    assert again == second
    assert again is not second


def test_a_malformed_certificate_is_refused_and_not_kept() -> None:
    parsed = ParsedCertificates()
    with pytest.raises(PkiError, match="not a valid PEM certificate"):
        parsed.parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert len(parsed) == 0
