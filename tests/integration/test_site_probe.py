"""A real site daemon's probe and metrics ports: ready once registered, closed when stopped."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from baton.probe import ProbeConfig
from site_node.config import SiteMetricsConfig
from site_node.daemon import SiteDaemon
from tests.conftest import LiveCoordinator
from tests.integration.sites import Sites
from tests.integration.test_site_daemon_faults import _config, _running, _wait


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def test_site_is_ready_once_registered_and_serves_its_metrics(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites
) -> None:
    config = dataclasses.replace(
        _config(coordinator, sites, "site-b", tmp_path),
        metrics=SiteMetricsConfig(listen="127.0.0.1:0"),
        probe=ProbeConfig(listen="127.0.0.1:0"),
    )
    daemon = SiteDaemon(config, max_attempts=3)
    with _running(daemon) as errors:
        _wait("the probe port", lambda: daemon.probe.port != 0)
        base = f"http://127.0.0.1:{daemon.probe.port}"
        assert _status(f"{base}/livez") == 200
        _wait("readiness", lambda: _status(f"{base}/readyz") == 200)
        url = f"http://127.0.0.1:{daemon.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        assert 'baton_site_hops_total{outcome="completed"} ' in text
        assert "site-b" not in text
        assert not errors
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/livez", timeout=5)
