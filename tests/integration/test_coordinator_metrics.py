"""The coordinator's Prometheus endpoint, scraped over HTTP while real sites use it."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from baton.errors import ConfigError, TransportError
from baton.probe import ProbeConfig
from baton.security.sealing import plan_hash
from baton.v1 import admin_pb2, site_pb2
from coordinator.config import CoordinatorConfig, MetricsConfig, load_coordinator_config
from coordinator.server import CoordinatorServer
from coordinator.store.base import EventKind
from tests.conftest import LiveCoordinator, Pki
from tests.integration.sites import (
    create_request,
    next_assignment,
    plan,
    register,
    seal_and_complete,
)


@pytest.fixture
def measured(pki: Pki, tmp_path: Path) -> Iterator[LiveCoordinator]:
    files = pki.files("coordinator")
    config = CoordinatorConfig(
        tls=files,
        listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        probe=ProbeConfig(listen="127.0.0.1:0"),
    )
    server = CoordinatorServer(config, files.load())
    server.start()
    try:
        yield LiveCoordinator(server, pki)
    finally:
        server.stop(grace=0.5)


def scrape(coord: LiveCoordinator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and sorted labels."""
    url = f"http://127.0.0.1:{coord.server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_runs_hops_bytes_sites_and_time_rpcs(
    measured: LiveCoordinator, tmp_path: Path
) -> None:
    stubs = register(measured, "site-a", "site-b")
    text = plan(["site-a", "site-b"])
    request = create_request(measured.pki, text)
    run = measured.admin().CreateRun(request).run
    next_assignment(stubs["site-a"])
    source = tmp_path / "out-0.bin"
    source.write_bytes(b"weights " * 4000)
    ref, _ = seal_and_complete(
        measured,
        stubs["site-a"],
        sender="site-a",
        recipient="site-b",
        run_id=run.run_id,
        hop=0,
        source=source,
        previous=plan_hash(text, request.plan_signature),
        plan_digest=plan_hash(text, request.plan_signature),
    )
    with pytest.raises(grpc.RpcError) as missing:
        measured.admin().GetRun(admin_pb2.GetRunRequest(run_id="no-such-run"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    # A site's certificate on the admin service: refused by the peer gate.
    with pytest.raises(grpc.RpcError) as denied:
        measured.admin("site-a").ListRuns(admin_pb2.ListRunsRequest())
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # A run id past the length limit: refused by the limits before any lookup.
    with pytest.raises(grpc.RpcError) as too_long:
        measured.admin().GetRun(admin_pb2.GetRunRequest(run_id="r" * 129))
    assert too_long.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    events = measured.server.store.list_events(run.run_id)
    assigned = next(e.time_ms for e in events if e.kind is EventKind.HOP_ASSIGNED)
    completed = next(e.time_ms for e in events if e.kind is EventKind.HOP_COMPLETED)

    m = scrape(measured)
    assert m["baton_runs", (("state", "running"),)] == 1
    assert m["baton_runs", (("state", "succeeded"),)] == 0
    assert m["baton_hops_completed_total", ()] == 1
    assert m["baton_hops_failed_total", ()] == 0
    assert m["baton_relayed_bytes_total", ()] == ref.size
    assert m["baton_sites_registered", ()] == 2
    assert m["baton_sites_online", ()] == 2
    assert m["baton_hop_duration_seconds_count", ()] == 1
    assert m["baton_hop_duration_seconds_sum", ()] == (completed - assigned) / 1000
    assert m["baton_hop_duration_seconds_bucket", (("le", "+Inf"),)] == 1
    assert m["baton_lease_expiries_total", ()] == 0

    def calls(method: str, code: str) -> float:
        return m["baton_rpc_duration_seconds_count", (("code", code), ("method", method))]

    assert calls("Register", "OK") == 2
    assert calls("UploadBlob", "OK") == 1
    assert calls("GetRun", "NOT_FOUND") == 1
    assert calls("GetRun", "INVALID_ARGUMENT") == 1
    assert calls("ListRuns", "PERMISSION_DENIED") == 1
    assert ("baton_rpc_duration_seconds_count", (("code", "OK"), ("method", "ListRuns"))) not in m
    # It shows counts and timings only: no site, run or key names.
    body = "\n".join(str(k) for k in m)
    assert "site-a" not in body
    assert run.run_id not in body


def test_a_site_whose_lease_expires_is_counted_once_per_absence(
    measured: LiveCoordinator,
) -> None:
    register(measured, "site-a")
    watch, journal = measured.server.watch, measured.server.scheduler.journal
    watch.check()  # seen live
    real_clock = journal.clock
    lease_ms = int(measured.server.config.lease_seconds * 1000)
    journal.clock = lambda: real_clock() + lease_ms + 60_000
    watch.check()
    watch.check()  # still away: the same absence
    assert scrape(measured)["baton_lease_expiries_total", ()] == 1
    journal.clock = real_clock
    measured.site("site-a").Heartbeat(site_pb2.HeartbeatRequest())
    watch.check()  # back
    journal.clock = lambda: real_clock() + lease_ms + 60_000
    watch.check()
    m = scrape(measured)
    assert m["baton_lease_expiries_total", ()] == 2
    assert m["baton_sites_online", ()] == 1  # the scrape reads the real clock


def test_probe_is_ready_while_the_coordinator_serves_and_needs_no_certificate(
    measured: LiveCoordinator,
) -> None:
    base = f"http://127.0.0.1:{measured.server.probe.port}"
    for path in ("/livez", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            assert (resp.status, resp.read()) == (200, b"ok\n")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/", timeout=5)
    assert missing.value.code == 404
    missing.value.close()


def test_metrics_are_off_unless_configured(coordinator: LiveCoordinator) -> None:
    assert coordinator.server.metrics.port == 0
    assert coordinator.server.probe.port == 0
    assert coordinator.server.metrics.interceptors == ()


def test_metrics_address_is_checked_and_a_taken_port_is_a_clear_error(
    pki: Pki, tmp_path: Path
) -> None:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text('[tls]\nca = "ca"\ncert = "c"\nkey = "k"\n[metrics]\nlisten = "9464"\n')
    with pytest.raises(ConfigError, match=r"'metrics\.listen' must be host:port, not '9464'"):
        load_coordinator_config(cfg)
    cfg.write_text(
        '[tls]\nca = "ca"\ncert = "c"\nkey = "k"\n[metrics]\nlisten = "127.0.0.1:9464"\n'
    )
    assert load_coordinator_config(cfg).metrics.listen == "127.0.0.1:9464"

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        files = pki.files("coordinator")
        config = CoordinatorConfig(
            tls=files,
            listen="127.0.0.1:0",
            state_dir=tmp_path / "state",
            metrics=MetricsConfig(listen=f"127.0.0.1:{port}"),
        )
        server = CoordinatorServer(config, files.load())
        with pytest.raises(TransportError, match=f"cannot serve metrics on 127\\.0\\.0\\.1:{port}"):
            server.start()
        server.stop(grace=0)
