"""``openssl s_client`` against the live coordinator: its mTLS is plain standard TLS 1.3."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from baton.security.tls import TlsFiles
from tests.conftest import LiveCoordinator

OPENSSL = shutil.which("openssl")
TIMEOUT_S = 20.0
NOT_HTTP2 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
"""Application data that is not gRPC's HTTP/2 preface: an accepted client gets the
server's HTTP/2 SETTINGS frame before the server hangs up on it."""

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def _s_client(
    coord: LiveCoordinator, client: TlsFiles | None, *, data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``openssl s_client`` to the coordinator, trusting only the federation CA.

    With ``data`` it is sent after the handshake and s_client reads until the server
    closes (``-ign_eof``); without, stdin is empty and s_client ends after the handshake.
    ``-alpn h2``: gRPC closes connections that did not negotiate HTTP/2.
    """
    assert OPENSSL is not None
    args = [
        OPENSSL, "s_client", "-connect", coord.target, "-CAfile", str(coord.pki.files("site-a").ca),
        "-verify_return_error", "-brief", "-alpn", "h2",
    ]  # fmt: skip
    if client is not None:
        args += ["-cert", str(client.cert), "-key", str(client.key)]
    if data is None:
        return subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S, check=False
        )
    return subprocess.run(
        [*args, "-ign_eof"], input=data, capture_output=True, timeout=TIMEOUT_S, check=False
    )


def _is_http2_settings(data: bytes) -> bool:
    """Whether ``data`` starts with an HTTP/2 SETTINGS frame (type 0x4 on stream 0)."""
    return len(data) >= 9 and data[3] == 0x04 and data[5:9] == b"\0\0\0\0"


def test_a_federation_client_completes_a_tls13_handshake(coordinator: LiveCoordinator) -> None:
    done = _s_client(coordinator, coordinator.pki.files("site-a"))
    report = done.stderr.decode(errors="replace")
    assert done.returncode == 0, report
    assert "CONNECTION ESTABLISHED" in report
    assert "Protocol version: TLSv1.3" in report
    assert "Verification: OK" in report
    assert "Peer certificate: CN = coordinator" in report
    # The server accepted the client certificate: it speaks HTTP/2 to it.
    accepted = _s_client(coordinator, coordinator.pki.files("site-a"), data=NOT_HTTP2)
    assert _is_http2_settings(accepted.stdout), accepted.stdout[:64]


def test_a_client_without_a_certificate_is_refused(coordinator: LiveCoordinator) -> None:
    # In TLS 1.3 the client's side of the handshake ends before the server judges the
    # client's (absent) certificate; the refusal shows when the client reads.
    done = _s_client(coordinator, None, data=NOT_HTTP2)
    report = done.stderr.decode(errors="replace")
    assert done.returncode != 0, report
    assert "Verification: OK" in report  # the client did accept the server
    assert done.stdout == b"", "the server spoke to a client without a certificate"
    assert "error" in report
