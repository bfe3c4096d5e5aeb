"""Revocation through a live coordinator: a CRL replaced while it runs takes effect at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from baton.errors import PkiError
from baton.security.revocation import issue_crl, revoke
from baton.v1 import admin_pb2, admin_pb2_grpc, site_pb2, site_pb2_grpc
from coordinator.config import CoordinatorConfig, load_coordinator_config
from coordinator.server import CoordinatorServer
from tests.conftest import LiveCoordinator, Pki
from tests.integration.sites import PROFILE

PLAN = """
[run]
name = "revocation-test"
sites = [{sites}]

[model]
name = "logreg"

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"
"""
TIMEOUT_S = 10.0


@dataclass
class Federation:
    """A live coordinator that reads ``crl``, and the CA that signs it."""

    coord: LiveCoordinator
    crl: Path

    def revoke(self, cert_path: Path) -> None:
        revoke(self.coord.pki.root / "ca", self.crl, cert_path.read_bytes())

    def tls_cert(self, name: str) -> Path:
        return self.coord.pki.files(name).cert

    def app_cert(self, name: str, which: str) -> Path:
        return self.coord.pki.root / name / "keys" / f"{which}.pem"


@pytest.fixture
def fed(pki: Pki, tmp_path: Path) -> Iterator[Federation]:
    crl = tmp_path / "crl.pem"
    issue_crl(pki.root / "ca", crl)
    files = pki.files("coordinator")
    config = CoordinatorConfig(
        tls=files,
        listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        crl=crl,
        crl_reload_seconds=0.0,
    )
    server = CoordinatorServer(config, files.load())
    server.start()
    try:
        yield Federation(LiveCoordinator(server, pki), crl)
    finally:
        server.stop(grace=0.5)


def _register(pki: Pki, channel: grpc.Channel, site: str) -> site_pb2.RegisterResponse:
    keys = pki.keys(site)
    response: site_pb2.RegisterResponse = site_pb2_grpc.SiteServiceStub(channel).Register(
        site_pb2.RegisterRequest(
            software_version="test",
            signing_certificate_pem=keys.signing_cert_pem.decode(),
            encryption_certificate_pem=keys.encryption_cert_pem.decode(),
            profile=PROFILE,
        ),
        timeout=TIMEOUT_S,
    )
    return response


def _heartbeat(channel: grpc.Channel) -> None:
    site_pb2_grpc.SiteServiceStub(channel).Heartbeat(site_pb2.HeartbeatRequest(), timeout=TIMEOUT_S)


def _create_run(pki: Pki, channel: grpc.Channel, *sites: str) -> str:
    plan = PLAN.format(sites=", ".join(f'"{s}"' for s in sites))
    signed = pki.signed_plan(plan)
    response = admin_pb2_grpc.AdminServiceStub(channel).CreateRun(
        admin_pb2.CreateRunRequest(
            plan_toml=plan,
            plan_signature=signed.signature,
            owner_signing_certificate_pem=signed.owner_signing_pem,
            owner_encryption_certificate_pem=signed.owner_encryption_pem,
        ),
        timeout=TIMEOUT_S,
    )
    run_id: str = response.run.run_id
    return run_id


def _refused(
    call: Callable[[], object], code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED
) -> str:
    """Calls ``call()``, asserts it fails with ``code``, and returns the public message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code
    return caught.value.details() or ""


def test_a_revoked_site_is_refused_without_a_restart(fed: Federation) -> None:
    pki = fed.coord.pki
    with fed.coord.channel("site-a") as a, fed.coord.channel("site-b") as b:
        assert _register(pki, a, "site-a").site_id == "site-a"
        _heartbeat(a)
        _register(pki, b, "site-b")
        fed.revoke(fed.tls_cert("site-a"))
        # The connection made before the revocation is refused on its next RPC...
        assert _refused(lambda: _heartbeat(a)) == "not authorized"
        assert _refused(lambda: _register(pki, a, "site-a")) == "not authorized"
        # ...and so is every new one, while other sites carry on.
        _heartbeat(b)
    with fed.coord.channel("site-a") as again:
        assert _refused(lambda: _register(pki, again, "site-a")) == "not authorized"
        assert _refused(lambda: _heartbeat(again)) == "not authorized"


def test_a_revoked_site_loses_its_assignment_stream(fed: Federation) -> None:
    with fed.coord.channel("site-a") as a:
        _register(fed.coord.pki, a, "site-a")
        stream = site_pb2_grpc.SiteServiceStub(a).WatchAssignments(
            site_pb2.WatchAssignmentsRequest(), timeout=TIMEOUT_S
        )
        try:
            fed.revoke(fed.tls_cert("site-a"))
            with pytest.raises(grpc.RpcError) as caught:
                next(iter(stream))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            stream.cancel()


def test_a_revoked_admin_cannot_create_a_run(fed: Federation) -> None:
    pki = fed.coord.pki
    with fed.coord.channel("site-a") as a, fed.coord.channel("owner") as owner:
        _register(pki, a, "site-a")
        assert _create_run(pki, owner, "site-a")
        fed.revoke(fed.tls_cert("owner"))
        assert _refused(lambda: _create_run(pki, owner, "site-a")) == "not authorized"
        admin = admin_pb2_grpc.AdminServiceStub(owner)
        assert _refused(lambda: admin.ListRuns(admin_pb2.ListRunsRequest(), timeout=TIMEOUT_S))


def test_a_plan_with_a_revoked_owner_key_is_refused(fed: Federation) -> None:
    pki = fed.coord.pki
    with fed.coord.channel("site-a") as a, fed.coord.channel("owner") as owner:
        _register(pki, a, "site-a")
        fed.revoke(fed.app_cert("owner", "signing"))
        assert _refused(lambda: _create_run(pki, owner, "site-a")) == "not authorized"
        runs = admin_pb2_grpc.AdminServiceStub(owner).ListRuns(
            admin_pb2.ListRunsRequest(), timeout=TIMEOUT_S
        )
        assert list(runs.runs) == []


@pytest.mark.parametrize("which", ["signing", "encryption"])
def test_a_site_with_a_revoked_application_certificate_cannot_register(
    fed: Federation, which: str
) -> None:
    pki = fed.coord.pki
    fed.revoke(fed.app_cert("site-b", which))
    with fed.coord.channel("site-b") as b, fed.coord.channel("owner") as owner:
        assert _refused(lambda: _register(pki, b, "site-b")) == "not authorized"
        # Its TLS certificate is still good: it is only unknown, not refused.
        _refused(lambda: _heartbeat(b), grpc.StatusCode.FAILED_PRECONDITION)
        sites = admin_pb2_grpc.AdminServiceStub(owner).ListSites(
            admin_pb2.ListSitesRequest(), timeout=TIMEOUT_S
        )
        assert list(sites.sites) == []


def _assignments(channel: grpc.Channel, count: int) -> list[site_pb2.Assignment]:
    """The first ``count`` assignments of a fresh stream."""
    stream = site_pb2_grpc.SiteServiceStub(channel).WatchAssignments(
        site_pb2.WatchAssignmentsRequest(), timeout=TIMEOUT_S
    )
    try:
        return [next(stream) for _ in range(count)]
    finally:
        stream.cancel()


@pytest.mark.parametrize("which", ["tls", "signing", "encryption"])
def test_an_assignment_never_names_a_revoked_next_site(fed: Federation, which: str) -> None:
    pki = fed.coord.pki
    with (
        fed.coord.channel("site-a") as a,
        fed.coord.channel("site-b") as b,
        fed.coord.channel("owner") as owner,
    ):
        _register(pki, a, "site-a")
        _register(pki, b, "site-b")
        run_id = _create_run(pki, owner, "site-a", "site-b")
        (first,) = _assignments(a, 1)
        assert (first.run_id, first.hop_index) == (run_id, 0)
        assert (first.next_hop.site_id, first.next_hop.hop_index) == ("site-b", 1)
        assert first.next_hop.encryption_certificate_pem == (
            fed.app_cert("site-b", "encryption").read_text()
        )
        cert = fed.tls_cert("site-b") if which == "tls" else fed.app_cert("site-b", which)
        fed.revoke(cert)
        # Another run of the same site still reaches it; the revoked one is held back
        # (the stream stays open until its deadline) for the run's fault policy.
        other = _create_run(pki, owner, "site-a")
        stream = site_pb2_grpc.SiteServiceStub(a).WatchAssignments(
            site_pb2.WatchAssignmentsRequest(), timeout=1.0
        )
        try:
            assert next(stream).run_id == other
            _refused(lambda: next(stream), grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            stream.cancel()


def test_an_assignment_never_names_a_revoked_study_owner(fed: Federation) -> None:
    pki = fed.coord.pki
    with fed.coord.channel("site-a") as a, fed.coord.channel("owner") as owner:
        _register(pki, a, "site-a")
        run_id = _create_run(pki, owner, "site-a")
        (first,) = _assignments(a, 1)
        assert first.next_hop.final
        assert first.next_hop.encryption_certificate_pem == (
            fed.app_cert("owner", "encryption").read_text()
        )
        fed.revoke(fed.app_cert("owner", "encryption"))
        stream = site_pb2_grpc.SiteServiceStub(a).WatchAssignments(
            site_pb2.WatchAssignmentsRequest(), timeout=1.0
        )
        try:  # held back, never sealed to the owner; the hop watch fails the run
            _refused(lambda: next(stream), grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            stream.cancel()
        fed.coord.server.watch.check()
        got = admin_pb2_grpc.AdminServiceStub(owner).GetRun(
            admin_pb2.GetRunRequest(run_id=run_id), timeout=TIMEOUT_S
        )
        assert got.error == (
            "hop 1 at site-a cannot be sealed to the study owner, who holds a revoked certificate"
        )


def test_a_named_crl_must_exist_and_be_the_cas(pki: Pki, tmp_path: Path) -> None:
    files = pki.files("coordinator")
    config = CoordinatorConfig(
        tls=files, listen="127.0.0.1:0", state_dir=tmp_path / "state", crl=tmp_path / "no.pem"
    )
    with pytest.raises(PkiError, match="cannot read CRL"):
        CoordinatorServer(config, files.load())
    assert not (tmp_path / "state").exists()


def test_the_config_names_the_crl_relative_to_its_file(pki: Pki, tmp_path: Path) -> None:
    coordinator = pki.root / "coordinator"
    issue_crl(pki.root / "ca", tmp_path / "crl.pem")
    path = tmp_path / "coordinator.toml"
    path.write_text(
        'listen = "127.0.0.1:0"\n'
        'crl = "crl.pem"\n'
        "crl_reload_seconds = 1\n"
        "[tls]\n"
        f'ca = "{coordinator / "ca.pem"}"\n'
        f'cert = "{coordinator / "coordinator.pem"}"\n'
        f'key = "{coordinator / "coordinator.key"}"\n',
        encoding="utf-8",
    )
    config = load_coordinator_config(path)
    assert (config.crl, config.crl_reload_seconds) == (tmp_path / "crl.pem", 1.0)
    server = CoordinatorServer(config, config.tls.load())  # reads the CRL, or raises
    assert server.port > 0
    server.start()
    server.stop(grace=0.1)
