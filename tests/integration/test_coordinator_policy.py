"""The coordinator's policy over real mTLS: only a run's owner cancels it, health answers
only non-revoked participants, and TLS 1.2 is refused by servers and clients alike."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from baton.security.pki import Identity, issue
from baton.security.tls import TlsFiles, channel_credentials
from baton.security.tls13 import CIPHER_SUITES_VARIABLE
from baton.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from baton.wire.channel import secure_channel
from tests.conftest import FEDERATION, Pki, coordinator_toml
from tests.integration.test_revocation_grpc import (
    TIMEOUT_S,
    Federation,
    _create_run,
    _refused,
    _register,
    fed,  # noqa: F401 (a fixture)
)

REPO = Path(__file__).resolve().parents[2]


def _other_admin(pki: Pki, tmp_path: Path) -> TlsFiles:
    auditor = Identity(federation=FEDERATION, kind="admin", name="auditor")
    issue(pki.root / "ca", tmp_path / "auditor", auditor)
    d = tmp_path / "auditor"
    return TlsFiles(ca=d / "ca.pem", cert=d / "auditor.pem", key=d / "auditor.key")


def test_only_the_runs_owner_may_cancel_it(fed: Federation, tmp_path: Path) -> None:  # noqa: F811
    coord = fed.coord
    with coord.channel("site-a") as site, coord.channel("owner") as owner:
        _register(coord.pki, site, "site-a")
        run_id = _create_run(coord.pki, owner, "site-a")
        other = secure_channel(
            coord.target, channel_credentials(_other_admin(coord.pki, tmp_path).load())
        )
        with other:
            stub = admin_pb2_grpc.AdminServiceStub(other)
            cancel = admin_pb2.CancelRunRequest(run_id=run_id, reason="not mine")
            assert _refused(lambda: stub.CancelRun(cancel, timeout=TIMEOUT_S)) == (
                f"run {run_id} belongs to admin owner; admin auditor may not cancel it"
            )
            # Reading it is still allowed, and the run runs on.
            got = stub.GetRun(admin_pb2.GetRunRequest(run_id=run_id), timeout=TIMEOUT_S)
            assert got.state == common_pb2.RUN_STATE_RUNNING
        done = admin_pb2_grpc.AdminServiceStub(owner).CancelRun(
            admin_pb2.CancelRunRequest(run_id=run_id, reason="mine"), timeout=TIMEOUT_S
        )
        assert (done.state, done.error) == (common_pb2.RUN_STATE_CANCELLED, "mine")


def _health(channel: grpc.Channel) -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
    )
    return int(response.status)


def test_health_answers_only_non_revoked_participants(fed: Federation) -> None:  # noqa: F811
    with fed.coord.channel("site-a") as a, fed.coord.channel("owner") as owner:
        assert _health(a) == health_pb2.HealthCheckResponse.SERVING
        fed.revoke(fed.tls_cert("site-a"))
        assert _refused(lambda: _health(a)) == "not authorized"
        assert _health(owner) == health_pb2.HealthCheckResponse.SERVING


OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_a_coordinator_process_refuses_a_tls12_handshake(pki: Pki, tmp_path: Path) -> None:
    config = coordinator_toml(pki, tmp_path / "coordinator.toml", tmp_path / "state")
    port_file = tmp_path / "port"
    args = ["serve", "--config", str(config), "--port-file", str(port_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", *args], cwd=REPO, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            if port_file.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        port = int(port_file.read_text())
        client = pki.files("site-a")
        versions = {}
        for flag in ("-tls1_2", "-tls1_3"):
            assert OPENSSL is not None
            done = subprocess.run(
                [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", flag, "-brief",
                 "-alpn", "h2", "-CAfile", str(client.ca), "-cert", str(client.cert),
                 "-key", str(client.key)],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S, check=False,
            )  # fmt: skip
            versions[flag] = (done.returncode, b"Protocol version: TLSv1." in done.stderr)
        assert versions == {"-tls1_2": (1, False), "-tls1_3": (0, True)}
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)


CLIENT = """
import sys
from baton.security.tls13 import pin_tls13
if sys.argv[1] == "pin":
    pin_tls13()
import grpc
from baton.security.tls import TlsFiles, channel_credentials
from baton.security.tls13 import CIPHER_SUITES_VARIABLE
from baton.wire.channel import secure_channel
from pathlib import Path
d = Path(sys.argv[3])
files = TlsFiles(ca=d / "ca.pem", cert=d / "site-a.pem", key=d / "site-a.key")
channel = secure_channel(sys.argv[2], channel_credentials(files.load()))
try:
    grpc.channel_ready_future(channel).result(timeout=5)
except grpc.FutureTimeoutError:
    pass
"""


def _without_pin() -> dict[str, str]:
    """This process's environment less any pin an earlier test's command made here."""
    env = {k: v for k, v in os.environ.items() if k != CIPHER_SUITES_VARIABLE}
    return {**env, "GRPC_VERBOSITY": "NONE"}


def _tls12_server(pki: Pki) -> tuple[ssl.SSLContext, socket.socket]:
    files = pki.files("coordinator")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    return context, listener


@pytest.mark.parametrize("pin", ["pin", "no-pin"])
def test_a_pinned_client_refuses_a_tls12_server(pki: Pki, pin: str) -> None:
    context, listener = _tls12_server(pki)
    port = listener.getsockname()[1]
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, pin, f"127.0.0.1:{port}", str(pki.root / "site-a")],
        cwd=REPO, env=_without_pin(),
    )  # fmt: skip
    version = None
    try:  # every connection the client makes, until one completes or the client gives up
        while version is None and client.poll() is None:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        version = tls.version()
                except (ssl.SSLError, OSError):
                    continue
    finally:
        client.kill()
        client.wait(timeout=TIMEOUT_S)
        listener.close()
    # Without the pin gRPC would settle for TLS 1.2; pinned, no handshake completes.
    assert version == (None if pin == "pin" else "TLSv1.2")
