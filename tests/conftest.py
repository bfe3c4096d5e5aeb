"""Fixtures shared across the suite: a throwaway federation PKI and a live coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import AppKeys, provision_app_keys, sign_plan
from baton.security.tls import TlsFiles, TlsMaterial, channel_credentials
from baton.v1 import admin_pb2_grpc, site_pb2_grpc
from baton.wire.channel import secure_channel
from coordinator.config import CoordinatorConfig
from coordinator.engine.runs import SignedPlan
from coordinator.server import CoordinatorServer

FEDERATION = "testfed"


@dataclass(frozen=True)
class Pki:
    """A federation CA with certificates for a coordinator, an admin and three sites."""

    root: Path

    def files(self, name: str) -> TlsFiles:
        d = self.root / name
        return TlsFiles(ca=d / "ca.pem", cert=d / f"{name}.pem", key=d / f"{name}.key")

    def material(self, name: str) -> TlsMaterial:
        return self.files(name).load()

    def keys(self, name: str) -> AppKeys:
        """The party's application keys (signing, encryption) and their certificates."""
        return AppKeys.load(self.root / name / "keys")

    @property
    def ca_pem(self) -> bytes:
        return (self.root / "ca" / "ca.pem").read_bytes()

    def identity(self, name: str) -> Identity:
        kind = "admin" if name == "owner" else "site"
        return Identity(federation=FEDERATION, kind=kind, name=name)

    def signed_plan(self, plan_toml: str, owner: str = "owner") -> SignedPlan:
        keys = self.keys(owner)
        return SignedPlan(
            signature=sign_plan(plan_toml, keys.signing_key),
            owner_signing_pem=keys.signing_cert_pem.decode(),
            owner_encryption_pem=keys.encryption_cert_pem.decode(),
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", FEDERATION)
    issue(
        root / "ca",
        root / "coordinator",
        Identity(federation=FEDERATION, kind="coordinator", name="coordinator"),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    owner = Identity(federation=FEDERATION, kind="admin", name="owner")
    issue(root / "ca", root / "owner", owner)
    provision_app_keys(root / "ca", root / "owner" / "keys", owner)
    for site in ("site-a", "site-b", "site-c"):
        identity = Identity(federation=FEDERATION, kind="site", name=site)
        issue(root / "ca", root / site, identity)
        provision_app_keys(root / "ca", root / site / "keys", identity)
    return Pki(root)


@dataclass
class LiveCoordinator:
    """A coordinator serving on a free loopback port, with helpers to dial it as anyone."""

    server: CoordinatorServer
    pki: Pki

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self, name: str) -> grpc.Channel:
        return secure_channel(self.target, channel_credentials(self.pki.material(name)))

    def site(self, name: str) -> site_pb2_grpc.SiteServiceStub:
        return site_pb2_grpc.SiteServiceStub(self.channel(name))

    def admin(self, name: str = "owner") -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel(name))


def coordinator_toml(pki: Pki, path: Path, state_dir: Path) -> Path:
    """Writes a coordinator config file at ``path`` (any free port) and returns it."""
    files = pki.files("coordinator")
    path.write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{state_dir}"\n[tls]\n'
        f'ca = "{files.ca}"\ncert = "{files.cert}"\nkey = "{files.key}"\n',
        encoding="utf-8",
    )
    return path


@contextmanager
def live_coordinator(
    pki: Pki, state_dir: Path, *, accept_state_loss: bool = False, **settings: Any
) -> Iterator[LiveCoordinator]:
    """A coordinator on a free loopback port over ``state_dir``, with config ``settings``."""
    files = pki.files("coordinator")
    config = CoordinatorConfig(tls=files, listen="127.0.0.1:0", state_dir=state_dir, **settings)
    server = CoordinatorServer(config, files.load(), accept_state_loss=accept_state_loss)
    server.start()
    try:
        yield LiveCoordinator(server, pki)
    finally:
        server.stop(grace=0.5)


@pytest.fixture
def coordinator(pki: Pki, tmp_path: Path) -> Iterator[LiveCoordinator]:
    with live_coordinator(pki, tmp_path / "state", lease_seconds=5.0) as coord:
        yield coord
