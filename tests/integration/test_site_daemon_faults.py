"""The site daemon against a live coordinator: a refused hop (its input blob deleted, its
recipient revoked) ends once (no reconnect, re-register, retrain loop) and the run follows
its fault policy; heartbeats go on while a hop trains.

Real coordinator (in process, real gRPC and mTLS), a real site daemon in a thread.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from baton.ml.data import write_site_data
from baton.security.revocation import issue_crl, revoke
from baton.v1 import admin_pb2, common_pb2, site_pb2, site_pb2_grpc
from coordinator.store.base import EventKind
from site_node.client import GrpcCoordinatorClient
from site_node.config import SiteConfig
from site_node.daemon import SiteDaemon
from site_node.hop import HopRunner
from site_node.retry import Backoff
from tests.conftest import LiveCoordinator, Pki, live_coordinator
from tests.integration.sites import Sites, create_request, next_hop, plan

PLAN = plan(["site-a", "site-b"])


def _config(
    coordinator: LiveCoordinator, sites: Sites, site: str, tmp_path: Path, crl: Path | None = None
) -> SiteConfig:
    data = tmp_path / f"{site}-data"
    write_site_data(data, sites.fed.sites[site], sites.fed.schema)
    return SiteConfig(
        coordinator=coordinator.target,
        tls=coordinator.pki.files(site),
        keys_dir=coordinator.pki.root / site / "keys",
        data_dir=data,
        work_dir=tmp_path / f"{site}-daemon",
        heartbeat_seconds=0.2,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
        crl=crl,
    )


@contextmanager
def _running(daemon: SiteDaemon) -> Iterator[list[BaseException]]:
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="site-daemon", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        daemon.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


@contextmanager
def _alive(stub: site_pb2_grpc.SiteServiceStub) -> Iterator[None]:
    """Keeps a site played by the test alive: a heartbeat every 0.5 s (the lease is 5 s),
    so the coordinator counts on it however slowly the machine runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            stub.Heartbeat(site_pb2.HeartbeatRequest(), timeout=5)
            stop.wait(0.5)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _wait(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _counting(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[float]:
    """Records the time of every call of ``cls.name``."""
    calls: list[float] = []
    original = getattr(cls, name)

    def wrapper(self: object, *args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def _after_hop0(coordinator: LiveCoordinator, sites: Sites) -> str:
    """A new run whose hop 0 site-a has done; returns its id."""
    run = coordinator.admin().CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    return run.run_id


def _in_state(coordinator: LiveCoordinator, run_id: str, state: int) -> Callable[[], bool]:
    admin = coordinator.admin()
    return lambda: admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id)).state == state


def _audit_events(log: Path) -> list[str]:
    """The events of a site's audit log, in order (none before it exists)."""
    if not log.exists():
        return []
    return [json.loads(line)["event"] for line in log.read_text().splitlines()]


def test_a_deleted_input_blob_ends_the_hop_once_and_the_run_goes_on_resealed(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    sites: Sites,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receiving site's hop fails once, with no reconnect loop; the coordinator asks the
    previous site to seal its kept output again, and the run finishes."""
    run_id = _after_hop0(coordinator, sites)
    admin = coordinator.admin()
    hop0 = admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id)).hops[0]
    [blob] = (coordinator.server.blobs.root / "sha256").rglob(hop0.output.blob_id)
    blob.unlink()
    registrations = _counting(monkeypatch, GrpcCoordinatorClient, "register")
    daemon = SiteDaemon(_config(coordinator, sites, "site-b", tmp_path), max_attempts=3)
    log = tmp_path / "site-b-daemon" / "audit.jsonl"

    def events() -> list[str]:
        return _audit_events(log)

    # site-a must be alive to seal its kept output again (else the run fails).
    with _alive(sites.stubs["site-a"]), _running(daemon) as errors:
        _wait("the hop to be refused", lambda: "hop_rejected" in events())
        time.sleep(1.0)  # time enough for a loop to show itself
        assert not errors
        assert events() == ["plan_accepted", "hop_rejected"]
        assert len(registrations) == 1  # one session: no reconnect, no re-registration
        got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id))
        assert got.state == common_pb2.RUN_STATE_RUNNING
        # site-a is offered hop 0 again and seals its kept output anew, to a new blob.
        assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
        resealed = admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id)).hops[0]
        assert resealed.output.blob_id != hop0.output.blob_id
        _wait("the run to succeed", _in_state(coordinator, run_id, common_pb2.RUN_STATE_SUCCEEDED))
        assert not errors

    assert events()[:2] == ["plan_accepted", "hop_rejected"]
    assert events().count("hop_sent") == 1  # trained and sent once, from the resealed input
    assert len(registrations) == 1


def test_a_revoked_next_party_ends_the_hop_once_and_the_run_skips_it(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    sites: Sites,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """site-a's CRL revokes site-b, the recipient the coordinator names: site-a refuses
    to seal to it, once, with a reason, in one session; the plan's ``on_failed_hop = "skip"``
    drops the hop and the run goes on without it."""
    crl = tmp_path / "crl.pem"
    revoke(coordinator.pki.root / "ca", crl, coordinator.pki.keys("site-b").signing_cert_pem)
    request = create_request(coordinator.pki, PLAN + '\n[faults]\non_failed_hop = "skip"\n')
    run_id = coordinator.admin().CreateRun(request).run.run_id
    registrations = _counting(monkeypatch, GrpcCoordinatorClient, "register")
    daemon = SiteDaemon(_config(coordinator, sites, "site-a", tmp_path, crl), max_attempts=3)
    log = tmp_path / "site-a-daemon" / "audit.jsonl"
    admin = coordinator.admin()

    # site-b must be alive for the skip (min_sites counts the live sites).
    with _alive(sites.stubs["site-b"]), _running(daemon) as errors:
        _wait("the hop to be refused", lambda: "hop_rejected" in _audit_events(log))
        time.sleep(1.0)  # time enough for a loop to show itself
        assert not errors
        assert _audit_events(log) == ["plan_accepted", "hop_rejected"]
        assert len(registrations) == 1  # one session: no reconnect, no re-registration
    assert not list((tmp_path / "site-a-daemon").rglob("*.safetensors"))  # nothing trained

    events = coordinator.server.store.list_events(run_id)
    faults = [e.message for e in events if e.kind is EventKind.FAULT]
    # The coordinator learns the category only; the site's log names the revoked party.
    assert faults == ["skip: hop 1 at site-a failed; skip: untrusted_party"]
    # The skipped hop is gone; site-b builds the model from the plan and ends the run.
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id))
    assert got.state == common_pb2.RUN_STATE_RUNNING, got.error
    assert [(h.hop_index, h.site_id) for h in got.hops] == [(0, "site-b")]
    assert sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run_id))
    assert got.state == common_pb2.RUN_STATE_SUCCEEDED, got.error


def test_a_next_site_the_coordinator_revoked_is_met_by_the_fault_policy(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator's own CRL revokes site-b, the recipient of site-a's hop: the hop is
    held back (site-a's stream stays open: one registration), the plan's ``on_lost_site =
    "skip"`` drops site-b's hop once, and site-a's hop, offered again naming the study
    owner, ends the run."""
    crl = tmp_path / "crl.pem"
    issue_crl(pki.root / "ca", crl)
    with live_coordinator(
        pki, tmp_path / "state", lease_seconds=5.0, crl=crl, crl_reload_seconds=0.0
    ) as coord:
        sites = Sites(coord, tmp_path)
        request = create_request(pki, PLAN + '\n[faults]\non_lost_site = "skip"\n')
        run_id = coord.admin().CreateRun(request).run.run_id
        revoke(pki.root / "ca", crl, pki.keys("site-b").signing_cert_pem)
        registrations = _counting(monkeypatch, GrpcCoordinatorClient, "register")
        daemon = SiteDaemon(_config(coord, sites, "site-a", tmp_path), max_attempts=None)

        def faults() -> list[str]:
            events = coord.server.store.list_events(run_id)
            return [e.message for e in events if e.kind is EventKind.FAULT]

        with _running(daemon) as errors:
            _wait("a fault decision about site-b", lambda: bool(faults()), timeout=3.0)
            _wait("the run to succeed", _in_state(coord, run_id, common_pb2.RUN_STATE_SUCCEEDED))
            assert not errors
        assert len(registrations) == 1
        assert faults() == ["skip: hop 2 at site-b has a revoked certificate; skip"]
        entries = [json.loads(x) for x in coord.server.audit.path.read_text().splitlines()]
        decided = [e["detail"] for e in entries if e["event"] == "fault_decided"]
        assert [(d["site"], d["fault"], d["action"]) for d in decided] == [
            ("site-b", "revoked", "skip")
        ]
        got = coord.admin().GetRun(admin_pb2.GetRunRequest(run_id=run_id))
        assert [(h.hop_index, h.site_id) for h in got.hops] == [(0, "site-a")]


def test_heartbeats_go_on_while_a_hop_trains(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    sites: Sites,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = _after_hop0(coordinator, sites)
    beats = _counting(monkeypatch, GrpcCoordinatorClient, "heartbeat")
    training: list[float] = []
    train = HopRunner._train

    def slow_train(self: HopRunner, *args: Any, **kwargs: Any) -> Any:
        training.append(time.monotonic())
        time.sleep(1.5)  # a hop that trains for a while
        result = train(self, *args, **kwargs)
        training.append(time.monotonic())
        return result

    monkeypatch.setattr(HopRunner, "_train", slow_train)
    config = _config(coordinator, sites, "site-b", tmp_path)
    daemon = SiteDaemon(config, backoff=Backoff(0.05, 0.2, rng=random.Random(0)))

    with _running(daemon) as errors:
        done = _in_state(coordinator, run_id, common_pb2.RUN_STATE_SUCCEEDED)
        _wait("the run to succeed", done)
        assert not errors

    start, end = training
    during = [t for t in beats if start <= t <= end]
    assert len(during) >= 4  # every 0.2 s over 1.5 s, with room for a busy machine
