"""Preflight pieces: key permissions, the verdict, and how a coordinator's certificate is judged."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from baton.security.pki import Identity, create_ca, issue, load_ca
from baton.security.preflight import Checklist, _judge, check_private, dial, unreachable
from baton.security.tls import TlsFiles


def _site(tmp_path: Path) -> TlsFiles:
    create_ca(tmp_path / "ca", "fed")
    files = issue(
        tmp_path / "ca", tmp_path / "pki", Identity(federation="fed", kind="site", name="a")
    )
    return TlsFiles(ca=files.ca, cert=files.cert, key=files.key)


def _server_cert(
    tmp_path: Path, *, days: float, dns: str, uri: str = "spiffe://fed/coordinator/hub"
) -> bytes:
    """A server certificate from the test CA naming ``uri``, valid from 2 days ago for ``days``."""
    _, ca_cert, ca_key = load_ca(tmp_path / "ca")
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordinator")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now - dt.timedelta(days=2) + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName(dns)]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_key_others_can_read_fails_with_the_fix(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    key.write_bytes(b"x")
    key.chmod(0o644)
    checks = Checklist()
    check_private(checks, "TLS private key", key)
    assert checks.lines() == [f"FAIL  TLS private key: {key} has mode 0644; run: chmod 600 {key}"]
    assert not checks.passed
    assert checks.verdict() == "NOT READY: 1 check(s) failed, 0 warning(s)"


def test_a_missing_file_fails_by_name(tmp_path: Path) -> None:
    checks = Checklist()
    check_private(checks, "signing key", tmp_path / "nope.key")
    assert checks.checks[0].detail == f"{tmp_path / 'nope.key'}: No such file or directory"


def test_expired_and_mismatched_coordinator_certificates_are_named(tmp_path: Path) -> None:
    material = _site(tmp_path).load()
    expired = _server_cert(tmp_path, days=1, dns="coord.example.org")
    assert _judge(expired, material, "coord.example.org", 7443).startswith(
        "expired: the coordinator's certificate expired on "
    )
    valid = _server_cert(tmp_path, days=30, dns="coord.example.org")
    assert _judge(valid, material, "coord.example.org", 7443) == ""
    assert _judge(valid, material, "COORD.example.org", 7443) == ""
    assert _judge(valid, material, "localhost", 7443) == (
        "TLS refused: name mismatch (cert names coord.example.org, you dialled localhost); "
        'dial "coord.example.org:7443", or reissue its certificate with localhost'
    )


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (
            "spiffe://fed/site/b",
            "not a coordinator: the server presented the certificate of spiffe://fed/site/b; "
            "only a coordinator of federation 'fed' may serve",
        ),
        (
            "spiffe://fed/admin/ops",
            "not a coordinator: the server presented the certificate of spiffe://fed/admin/ops; "
            "only a coordinator of federation 'fed' may serve",
        ),
        (
            "https://coord.example.org",
            "not a coordinator: the certificate presented names no party (invalid SPIFFE id "
            "'https://coord.example.org': the scheme must be spiffe://)",
        ),
    ],
)
def test_a_certificate_of_another_kind_is_not_a_coordinator(
    tmp_path: Path, uri: str, problem: str
) -> None:
    material = _site(tmp_path).load()
    cert = _server_cert(tmp_path, days=30, dns="coord.example.org", uri=uri)
    assert _judge(cert, material, "coord.example.org", 7443) == problem


def test_a_certificate_from_another_ca_is_an_unknown_ca(tmp_path: Path) -> None:
    material = _site(tmp_path / "ours").load()
    _site(tmp_path / "theirs")
    foreign = _server_cert(tmp_path / "theirs", days=30, dns="localhost")
    assert _judge(foreign, material, "localhost", 1).startswith(
        "TLS refused: unknown CA (the coordinator's certificate is issued by 'CN=fed federation CA'"
    )


def test_dialling_a_closed_port_says_not_listening(tmp_path: Path) -> None:
    files = _site(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    found = dial(f"127.0.0.1:{port}", files, files.load(), timeout=2)
    assert not found.ok
    assert found.detail.startswith(
        f"not listening: nothing accepts connections at 127.0.0.1:{port}"
    )
    assert dial("nowhere", files, files.load()).detail == (
        "not listening: 'nowhere' is not an address (host:port)"
    )


@pytest.mark.parametrize(
    ("details", "phrase"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:37167: "
            "Failed to connect to remote host: Connection refused",
            "not listening",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:37167: "
            "Custom verification check failed with error: UNAUTHENTICATED: Hostname "
            "Verification Check failed.",
            "TLS refused: name mismatch (run the preflight check to see the names it holds)",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:37167: "
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
            "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
            "certificate: OK",
            "TLS refused: unknown CA (a certificate is not from this federation's CA)",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:33395: "
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
            "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unsupported certificate purpose",
            "not a coordinator: the server's certificate is not a TLS server certificate",
        ),
        ("SSL routines: CERTIFICATE_VERIFY_FAILED: certificate has expired", "expired: a "),
        ("run is cancelled", ""),
    ],
)
def test_grpc_unavailable_details_name_the_problem(details: str, phrase: str) -> None:
    found = unreachable(details)
    assert found.startswith(phrase) if phrase else found == ""
