"""The site's metrics (counted at its coordinator port, served over real HTTP) and the probes."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from baton.domain import BlobRef
from baton.errors import ConfigError, TransportError
from baton.probe import ProbeConfig, ProbeServer
from site_node.client import HopDone
from site_node.config import SiteMetricsConfig, load_site_config
from site_node.fake_client import FakeCoordinatorClient
from site_node.metrics import MeteredClient, SiteMetrics, SiteMetricsEndpoint


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_metered_client_counts_hops_seconds_bytes_samples_and_rejections(
    tmp_path: Path,
) -> None:
    fake = FakeCoordinatorClient()
    metrics = SiteMetrics()
    now = [100.0]
    client = MeteredClient(fake, metrics, clock=lambda: now[0])
    blob = fake.put_blob(b"x" * 1000)
    client.download(run_id="r1", hop_index=1, blob=blob, dest=tmp_path / "in")
    client.report_metrics(run_id="r1", hop_index=1, stage="before", metrics={})
    now[0] = 112.5
    done = HopDone(
        run_id="r1", hop_index=1, output=BlobRef(blob_id="b" * 64, size=2500),
        output_manifest=b"m", metrics_before={}, metrics_after={}, num_examples=400,
        train_seconds=8.0,
    )  # fmt: skip
    client.complete_hop(done)
    client.fail_hop(run_id="r1", hop_index=2, reason="rejected_hop", message="")
    client.fail_hop(run_id="r2", hop_index=0, reason="rejected_hop", message="")

    endpoint = SiteMetricsEndpoint(SiteMetricsConfig(listen="127.0.0.1:0"), metrics)
    endpoint.start()
    try:
        status, text = get(f"http://127.0.0.1:{endpoint.port}/metrics")
    finally:
        endpoint.stop()
    assert status == 200
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert m["baton_site_hops_total", (("outcome", "completed"),)] == 1
    assert m["baton_site_hops_total", (("outcome", "failed"),)] == 2
    assert m["baton_site_hop_duration_seconds_sum", ()] == 12.5
    assert m["baton_site_model_bytes_total", (("direction", "in"),)] == 1000
    assert m["baton_site_model_bytes_total", (("direction", "out"),)] == 2500
    assert m["baton_site_samples_per_second", ()] == 50.0
    assert m["baton_site_rejections_total", (("reason", "rejected_hop"),)] == 2
    assert "r1" not in text
    assert [c.method for c in fake.calls] == [
        "download", "report_metrics", "complete_hop", "fail_hop", "fail_hop",
    ]  # fmt: skip


def test_probes_answer_live_and_ready_and_reveal_nothing_else() -> None:
    ready = [False]
    probe = ProbeServer(ProbeConfig(listen="127.0.0.1:0"), ready=lambda: ready[0])
    probe.start()
    try:
        base = f"http://127.0.0.1:{probe.port}"
        assert get(f"{base}/livez") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "not ready\n")
        ready[0] = True
        assert get(f"{base}/readyz") == (200, "ok\n")
        assert get(f"{base}/metrics") == (404, "not found\n")
        with urllib.request.urlopen(f"{base}/livez", timeout=5) as resp:
            assert resp.headers["Server"] == "probe"
    finally:
        probe.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/livez", timeout=5)


def test_probe_and_metrics_are_off_by_default_and_a_taken_port_is_a_clear_error() -> None:
    off = ProbeServer(ProbeConfig(), ready=lambda: True)
    off.start()
    assert off.port == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        probe = ProbeServer(ProbeConfig(listen=f"127.0.0.1:{port}"), ready=lambda: True)
        with pytest.raises(TransportError, match=f"cannot serve probes on 127.0.0.1:{port}"):
            probe.start()
        metrics = SiteMetricsEndpoint(SiteMetricsConfig(listen=f"127.0.0.1:{port}"))
        with pytest.raises(TransportError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.start()


def test_site_config_checks_metrics_and_probe_addresses(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    head = 'coordinator = "127.0.0.1:7443"\n[tls]\nca = "ca"\ncert = "c"\nkey = "k"\n'
    cfg.write_text(head + '[probe]\nlisten = "8080"\n')
    with pytest.raises(ConfigError, match=r"'probe\.listen' must be host:port, not '8080'"):
        load_site_config(cfg)
    cfg.write_text(head + '[metrics]\nlisten = "127.0.0.1:9465"\n[probe]\nlisten = "[::1]:8080"\n')
    loaded = load_site_config(cfg)
    assert loaded.metrics.listen == "127.0.0.1:9465"
    assert loaded.probe.listen == "[::1]:8080"
