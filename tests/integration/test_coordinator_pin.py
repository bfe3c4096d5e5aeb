"""Clients pin the coordinator by its certificate's kind: a site's certificate that names
the dialled host cannot impersonate the coordinator, to a site daemon, the owner's client or
the preflight, while a coordinator's certificate issued before kinds had purposes still serves.

Real gRPC servers with real mTLS on loopback; the impostors' certificates are crafted here,
signed by the federation CA, since ``baton.security.pki`` no longer issues them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from baton.errors import PkiError, TransportError
from baton.ml.data import write_site_data
from baton.security.pin import coordinator_problem
from baton.security.pki import load_ca
from baton.security.preflight import Dial, dial
from baton.security.tls import TlsFiles, channel_credentials, server_credentials
from baton.wire.channel import secure_channel
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from owner.client import AdminClient
from sim.tasks import Partition, make_federation
from site_node.config import SiteConfig
from site_node.daemon import SiteDaemon
from tests.conftest import FEDERATION, Pki

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
IMPOSTOR = f"spiffe://{FEDERATION}/site/mallory"
NOT_A_COORDINATOR = (
    f"not a coordinator: the server presented the certificate of {IMPOSTOR}; "
    f"only a coordinator of federation {FEDERATION!r} may serve"
)
NOT_A_SERVER = "not a coordinator: the server's certificate is not a TLS server certificate"
KINDS = {"client-only": [CLIENT], "legacy": [SERVER, CLIENT]}
"""A site's certificate as the PKI issues it now, and as it did before (both purposes)."""


def _crafted(
    pki: Pki, out: Path, spiffe_id: str, purposes: list[x509.ObjectIdentifier]
) -> TlsFiles:
    """A leaf from the federation CA naming ``spiffe_id``, ``localhost`` and ``127.0.0.1``."""
    _, ca_cert, ca_key = load_ca(pki.root / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir()
    (out / "crafted.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = out / "crafted.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return TlsFiles(ca=pki.root / "ca" / "ca.pem", cert=out / "crafted.pem", key=key_path)


class _Counter(grpc.ServerInterceptor):
    """Counts the calls that reached the impostor (past the handshake)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        self.calls.append(handler_call_details.method)
        return continuation(handler_call_details)


@pytest.fixture(params=sorted(KINDS))
def impostor(
    request: pytest.FixtureRequest, pki: Pki, tmp_path: Path
) -> Iterator[tuple[str, str, _Counter]]:
    """(kind, target, calls): a server on 127.0.0.1 presenting a site's certificate."""
    kind: str = request.param
    files = _crafted(pki, tmp_path / "impostor", IMPOSTOR, KINDS[kind])
    counter = _Counter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[counter])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(files.load()))
    server.start()
    try:
        yield kind, f"127.0.0.1:{port}", counter
    finally:
        server.stop(None).wait()


def test_the_handshake_refuses_a_site_certificate_as_a_server(
    impostor: tuple[str, str, _Counter], pki: Pki
) -> None:
    kind, target, counter = impostor
    with secure_channel(target, channel_credentials(pki.material("site-a"))) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        if kind == "client-only":  # BoringSSL checks the server purpose: no call gets through
            with pytest.raises(grpc.RpcError) as caught:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "unsupported certificate purpose" in (caught.value.details() or "")
            assert counter.calls == []
        else:  # a legacy certificate passes the handshake: hence the clients' own look
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
    expected = "" if kind == "client-only" else NOT_A_COORDINATOR  # "": gRPC says why
    assert coordinator_problem(target, pki.material("site-a")) == expected


def test_the_owner_client_refuses_a_site_posing_as_the_coordinator(
    impostor: tuple[str, str, _Counter], pki: Pki
) -> None:
    kind, target, counter = impostor
    client = AdminClient(target, pki.material("owner"))
    with client, pytest.raises((PkiError, TransportError)) as caught:
        client.list_runs()
    if kind == "client-only":
        assert type(caught.value) is TransportError
        assert caught.value.message == (
            f"cannot list runs: coordinator at {target} unreachable ({NOT_A_SERVER})"
        )
    else:
        assert type(caught.value) is PkiError
        assert caught.value.message == (
            f"cannot list runs: the server at {target} is {NOT_A_COORDINATOR}"
        )
    assert counter.calls == []


def test_the_site_daemon_refuses_a_site_posing_as_the_coordinator(
    impostor: tuple[str, str, _Counter], pki: Pki, tmp_path: Path
) -> None:
    kind, target, counter = impostor
    fed = make_federation("breast_cancer", ["site-a"], Partition(kind="iid"), seed=0)
    write_site_data(tmp_path / "data", fed.sites["site-a"], fed.schema)
    config = SiteConfig(
        coordinator=target,
        tls=pki.files("site-a"),
        keys_dir=pki.root / "site-a" / "keys",
        data_dir=tmp_path / "data",
        work_dir=tmp_path / "work",
        retry_initial_seconds=0.01,
        retry_max_seconds=0.01,
    )
    daemon = SiteDaemon(config, max_attempts=1)
    with pytest.raises((PkiError, TransportError)) as caught:
        daemon.run()
    if kind == "client-only":
        assert type(caught.value) is TransportError
        assert NOT_A_SERVER in caught.value.message
    else:  # refused for good, before the daemon says anything to it
        assert type(caught.value) is PkiError
        assert caught.value.message == f"coordinator at {target}: {NOT_A_COORDINATOR}"
    assert counter.calls == []


def test_the_preflight_names_a_server_that_is_not_a_coordinator(
    impostor: tuple[str, str, _Counter], pki: Pki
) -> None:
    _, target, _ = impostor
    found = dial(target, pki.files("site-a"), pki.material("site-a"), timeout=10)
    assert found == Dial(False, NOT_A_COORDINATOR)


def test_a_coordinator_certificate_with_both_purposes_still_serves(
    pki: Pki, tmp_path: Path
) -> None:
    """Issued before kinds had purposes (server and client auth): accepted as it was."""
    legacy = _crafted(
        pki, tmp_path / "legacy", f"spiffe://{FEDERATION}/coordinator/coordinator", [SERVER, CLIENT]
    )
    config = CoordinatorConfig(tls=legacy, listen="127.0.0.1:0", state_dir=tmp_path / "state")
    server = CoordinatorServer(config, legacy.load())
    server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        assert coordinator_problem(target, pki.material("owner")) == ""
        with AdminClient(target, pki.material("owner")) as client:
            assert client.list_runs() == []
        found = dial(target, pki.files("site-a"), pki.material("site-a"), timeout=10)
        assert found == Dial(True, f"{target} accepts this party's certificate")
    finally:
        server.stop(grace=0)
