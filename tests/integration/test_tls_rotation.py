"""Live rotation of the coordinator's TLS certificate: replaced files, no restart."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from baton.security.pki import Identity, IssuedFiles, issue
from baton.security.tls import TlsFiles, channel_credentials
from baton.v1 import site_pb2, site_pb2_grpc
from baton.wire.channel import secure_channel
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from tests.conftest import FEDERATION, Pki

TIMEOUT_S = 10.0
COORDINATOR = Identity(federation=FEDERATION, kind="coordinator", name="coordinator")


@dataclass
class Rotating:
    """A coordinator serving the certificate and key in ``live``, which tests replace."""

    server: CoordinatorServer
    pki: Pki
    live: TlsFiles
    tmp: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self, name: str) -> grpc.Channel:
        return secure_channel(self.target, channel_credentials(self.pki.material(name)))

    def new_pair(self, label: str, identity: Identity = COORDINATOR) -> IssuedFiles:
        if identity != COORDINATOR:  # only a coordinator's certificate names hosts
            return issue(self.pki.root / "ca", self.tmp / label, identity)
        return issue(
            self.pki.root / "ca",
            self.tmp / label,
            identity,
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
        )

    def install(self, *, cert: Path | None = None, key: Path | None = None) -> None:
        """Replaces the live files as an operator would: each one atomically, key first."""
        for source, dest in ((key, self.live.key), (cert, self.live.cert)):
            if source is not None:
                tmp = dest.with_suffix(".new")
                shutil.copyfile(source, tmp)
                os.replace(tmp, dest)

    def served_serial(self) -> int:
        """The serial of the certificate a brand-new TLS connection is shown.

        A plain ``ssl`` client (OpenSSL) presenting site-a's certificate, checking the
        server's against the federation CA and the dialled IP.
        """
        site = self.pki.files("site-a")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(cafile=site.ca)
        context.load_cert_chain(site.cert, site.key)
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _register(channel: grpc.Channel, pki: Pki, site: str) -> str:
    keys = pki.keys(site)
    response = site_pb2_grpc.SiteServiceStub(channel).Register(
        site_pb2.RegisterRequest(
            software_version="test",
            signing_certificate_pem=keys.signing_cert_pem.decode(),
            encryption_certificate_pem=keys.encryption_cert_pem.decode(),
        ),
        timeout=TIMEOUT_S,
    )
    site_id: str = response.site_id
    return site_id


def _heartbeat(channel: grpc.Channel) -> int:
    response = site_pb2_grpc.SiteServiceStub(channel).Heartbeat(
        site_pb2.HeartbeatRequest(), timeout=TIMEOUT_S
    )
    expires: int = response.lease_expires_unix_ms
    return expires


@pytest.fixture
def rotating(pki: Pki, tmp_path: Path) -> Iterator[Rotating]:
    original = pki.files("coordinator")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = TlsFiles(
        ca=live_dir / "ca.pem", cert=live_dir / "coordinator.pem", key=live_dir / "coordinator.key"
    )
    for source, dest in zip(
        (original.ca, original.cert, original.key), (live.ca, live.cert, live.key), strict=True
    ):
        shutil.copyfile(source, dest)
    config = CoordinatorConfig(tls=live, listen="127.0.0.1:0", state_dir=tmp_path / "state")
    server = CoordinatorServer(config, live.load())
    server.start()
    try:
        yield Rotating(server, pki, live, tmp_path)
    finally:
        server.stop(grace=0.5)


def test_a_replaced_certificate_is_served_to_new_connections(rotating: Rotating) -> None:
    pki = rotating.pki
    first = _serial(rotating.live.cert)
    assert rotating.served_serial() == first
    with rotating.channel("site-a") as before:
        assert _register(before, pki, "site-a") == "site-a"
        new = rotating.new_pair("new")
        rotating.install(cert=new.cert, key=new.key)
        assert rotating.served_serial() == _serial(new.cert) != first
        assert rotating.served_serial() == _serial(new.cert)
        assert rotating.server.tls.current.cert_pem == new.cert.read_bytes()
        # The client connected before the rotation keeps working...
        assert _heartbeat(before) > 0
        # ...and a new gRPC client accepts the new certificate.
        with rotating.channel("site-b") as after:
            assert _register(after, pki, "site-b") == "site-b"
        assert _heartbeat(before) > 0


@pytest.mark.parametrize("broken", ["mismatched-key", "garbage", "other-identity", "missing"])
def test_a_broken_new_pair_keeps_the_old_one_serving(
    rotating: Rotating, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    pki = rotating.pki
    first = _serial(rotating.live.cert)
    new = rotating.new_pair("new")
    if broken == "mismatched-key":
        rotating.install(cert=new.cert)  # the new certificate without its key
    elif broken == "garbage":
        garbage = rotating.tmp / "garbage.pem"
        garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
        rotating.install(cert=garbage)
    elif broken == "other-identity":
        site = rotating.new_pair("site", Identity(federation=FEDERATION, kind="site", name="x"))
        rotating.install(cert=site.cert, key=site.key)
    else:
        rotating.live.key.unlink()
    caplog.set_level(logging.WARNING, logger="coordinator.tls_reload")
    for _ in range(3):
        assert rotating.served_serial() == first
        with rotating.channel("site-a") as channel:
            assert _register(channel, pki, "site-a") == "site-a"
    warnings = [r for r in caplog.records if r.name == "coordinator.tls_reload"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].getMessage().startswith("keeping the TLS certificate in force: ")
    if broken == "other-identity":  # refused for its kind, before its name is compared
        assert warnings[0].getMessage() == (
            f"keeping the TLS certificate in force: certificate {rotating.live.cert} names "
            "spiffe://testfed/site/x, a site's certificate; a coordinator needs a "
            "coordinator's certificate, the only kind its clients accept (baton pki issue "
            "--kind coordinator)"
        )
    # Once the files hold a good pair again, it is served.
    rotating.install(cert=new.cert, key=new.key)
    assert rotating.served_serial() == _serial(new.cert)
    with rotating.channel("site-a") as channel:
        assert _register(channel, pki, "site-a") == "site-a"
