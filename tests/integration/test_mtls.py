"""Mutual TLS through a real gRPC server on loopback, certificates from ``baton.security.pki``."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from baton.errors import PkiError
from baton.security.pki import Identity, IssuedFiles, create_ca, issue
from baton.security.tls import TlsFiles, channel_credentials, require_peer, server_credentials

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

WHOAMI = "/baton.test.v1.Whoami/Who"
"""A test-only method that answers the caller's SPIFFE id if it is a site of ``acme``."""
TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Pki:
    """The certificates of one test: the federation ``acme`` and an impostor CA."""

    ca: Path
    coordinator: IssuedFiles
    coordinator_without_ip: IssuedFiles
    site: IssuedFiles
    admin: IssuedFiles
    foreign_site: IssuedFiles


@pytest.fixture
def certs(tmp_path: Path) -> Pki:
    create_ca(tmp_path / "ca", "acme")
    # Same federation name, different key: only the key makes a CA.
    create_ca(tmp_path / "foreign-ca", "acme")

    def issued(
        kind: str, name: str, ca: str = "ca", *, dns: Sequence[str] = (), ip: Sequence[str] = ()
    ) -> IssuedFiles:
        identity = Identity(federation="acme", kind=kind, name=name)
        return issue(
            tmp_path / ca, tmp_path / f"{ca}-{name}", identity, dns_names=dns, ip_addresses=ip
        )

    return Pki(
        ca=tmp_path / "ca" / "ca.pem",
        coordinator=issued("coordinator", "hub", dns=["localhost"], ip=["127.0.0.1"]),
        coordinator_without_ip=issued("coordinator", "hub2", dns=["localhost"]),
        site=issued("site", "st-mary"),
        admin=issued("admin", "ops"),
        foreign_site=issued("site", "st-mary", ca="foreign-ca"),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Server:
    port: int
    seen: list[Identity]
    """Identities the Whoami handler accepted, in call order."""


@pytest.fixture
def serve(certs: Pki) -> Iterator[Callable[[IssuedFiles], Server]]:
    servers: list[grpc.Server] = []

    def start(files: IssuedFiles) -> Server:
        material = TlsFiles(ca=files.ca, cert=files.cert, key=files.key).load()
        seen: list[Identity] = []

        def who(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                identity = require_peer(context, federation="acme", kind="site")
            except PkiError:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "rejected")
            seen.append(identity)
            return identity.spiffe_id.encode()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servers.append(server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(who)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("baton.test.v1.Whoami", {"Who": handler})]
        )
        port = server.add_secure_port("127.0.0.1:0", server_credentials(material))
        server.start()
        return Server(port=port, seen=seen)

    yield start
    for server in servers:
        server.stop(None).wait()


def _channel(
    target: str, certs: Pki, client: IssuedFiles | None, *, impostor: bool = False
) -> grpc.Channel:
    """A channel trusting the ``acme`` CA and presenting ``client`` (or no certificate).

    A client goes through :func:`TlsFiles.load` and :func:`channel_credentials`; an
    ``impostor``'s files go to grpc unchecked, as an attacker's would.
    """
    if client is None:
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    elif impostor:
        creds = grpc.ssl_channel_credentials(
            root_certificates=certs.ca.read_bytes(),
            private_key=client.key.read_bytes(),
            certificate_chain=client.cert.read_bytes(),
        )
    else:
        material = TlsFiles(ca=certs.ca, cert=client.cert, key=client.key).load()
        creds = channel_credentials(material)
    return grpc.secure_channel(target, creds)


def _health(channel: grpc.Channel) -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
    )
    status: int = response.status
    return status


def _whoami(channel: grpc.Channel) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHOAMI)
    return call(b"", timeout=TIMEOUT_S)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_federation_client_is_served_and_identified(
    certs: Pki, serve: Callable[[IssuedFiles], Server], host: str
) -> None:
    server = serve(certs.coordinator)
    with _channel(f"{host}:{server.port}", certs, certs.site) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert _whoami(channel) == b"spiffe://acme/site/st-mary"
    assert server.seen == [Identity(federation="acme", kind="site", name="st-mary")]


@pytest.mark.parametrize("client", ["foreign_site", None])
def test_a_client_without_a_federation_certificate_is_refused(
    certs: Pki, serve: Callable[[IssuedFiles], Server], client: str | None
) -> None:
    server = serve(certs.coordinator)
    files = None if client is None else getattr(certs, client)
    with _channel(f"127.0.0.1:{server.port}", certs, files, impostor=True) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _health(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as caught:
            _whoami(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.seen == []


def test_a_peer_of_the_wrong_kind_is_denied_by_require_peer(
    certs: Pki, serve: Callable[[IssuedFiles], Server]
) -> None:
    server = serve(certs.coordinator)
    with _channel(f"127.0.0.1:{server.port}", certs, certs.admin) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _whoami(channel)
        assert (caught.value.code(), caught.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "rejected",
        )
    assert server.seen == []


def test_the_server_certificate_must_name_the_dialled_ip(
    certs: Pki, serve: Callable[[IssuedFiles], Server]
) -> None:
    server = serve(certs.coordinator_without_ip)
    with _channel(f"localhost:{server.port}", certs, certs.site) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    with _channel(f"127.0.0.1:{server.port}", certs, certs.site) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _health(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _outside_the_federation(certs: Pki, tmp_path: Path) -> IssuedFiles:
    """A client certificate signed by the ``acme`` CA key but naming another federation."""
    ca_dir = certs.ca.parent
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://evil/site/x")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = tmp_path / "intruder"
    out.mkdir()
    (out / "x.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "x.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return IssuedFiles(cert=out / "x.pem", key=out / "x.key", ca=certs.ca)


def test_the_ca_name_constraint_is_enforced_at_the_handshake(
    certs: Pki, serve: Callable[[IssuedFiles], Server], tmp_path: Path
) -> None:
    intruder = _outside_the_federation(certs, tmp_path)
    server = serve(certs.coordinator)
    with _channel(f"127.0.0.1:{server.port}", certs, intruder, impostor=True) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _health(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_accepts_issued_certificates_and_enforces_the_constraint(
    certs: Pki, tmp_path: Path
) -> None:
    assert OPENSSL is not None
    for files in (certs.coordinator, certs.site, certs.admin):
        done = subprocess.run(
            [OPENSSL, "verify", "-CAfile", str(certs.ca), str(files.cert)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, f"{files.cert}: OK\n")
    foreign = subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(certs.ca), str(certs.foreign_site.cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert foreign.returncode != 0
    assert "unable to get local issuer certificate" in foreign.stderr
    intruder = _outside_the_federation(certs, tmp_path)
    outside = subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(certs.ca), str(intruder.cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert outside.returncode != 0
    assert "permitted subtree violation" in outside.stderr
