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
from baton.v1 import admin_pb2
from coordinator.config import CoordinatorConfig, MetricsConfig, load_coordinator_config
from coordinator.server import CoordinatorServer
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
    with pytest.raises(grpc.RpcError):
        measured.admin().GetRun(admin_pb2.GetRunRequest(run_id="no-such-run"))

    m = scrape(measured)
    assert m["baton_runs", (("state", "running"),)] == 1
    assert m["baton_runs", (("state", "succeeded"),)] == 0
    assert m["baton_hops_completed_total", ()] == 1
    assert m["baton_hops_failed_total", ()] == 0
    assert m["baton_relayed_bytes_total", ()] == ref.size
    assert m["baton_sites_registered", ()] == 2
    assert m["baton_sites_online", ()] == 2
    ok = (("method", "Register"), ("outcome", "ok"))
    assert m["baton_rpc_duration_seconds_count", ok] == 2
    failed = (("method", "GetRun"), ("outcome", "error"))
    assert m["baton_rpc_duration_seconds_count", failed] == 1
    assert m["baton_rpc_duration_seconds_count", (("method", "UploadBlob"), ("outcome", "ok"))] == 1
    # It shows counts and timings only: no site, run or key names.
    body = "\n".join(str(k) for k in m)
    assert "site-a" not in body
    assert run.run_id not in body


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
