"""The plain-HTTP side ports on IPv6: ``[::1]:PORT`` binds ::1, not an IPv4 address."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from baton.probe import MetricsPort, ProbeConfig, ProbeServer, split_listen


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1 cannot be bound)"
)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("[::1]:8080", ("::1", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::]:9", ("::", 9))],
)
def test_listen_addresses_split_into_a_bindable_host(
    listen: str, expected: tuple[str, int]
) -> None:
    assert split_listen(listen) == expected


@needs_ipv6
def test_probes_answer_over_ipv6_loopback() -> None:
    probe = ProbeServer(ProbeConfig(listen="[::1]:0"), ready=lambda: False)
    probe.start()
    try:
        assert probe.port != 0
        base = f"http://[::1]:{probe.port}"
        assert _get(f"{base}/livez") == (200, b"ok\n")
        assert _get(f"{base}/readyz") == (503, b"not ready\n")
        with pytest.raises(OSError):  # bound to ::1 only, not to IPv4
            socket.create_connection(("127.0.0.1", probe.port), timeout=2).close()
    finally:
        probe.stop()


@needs_ipv6
def test_metrics_are_served_over_ipv6_loopback() -> None:
    registry = CollectorRegistry()
    Counter("probe_test_hits", "A test counter.", registry=registry).inc()
    metrics = MetricsPort("[::1]:0", registry)
    metrics.start()
    try:
        status, body = _get(f"http://[::1]:{metrics.port}/metrics")
    finally:
        metrics.stop()
    assert status == 200
    assert b"probe_test_hits_total 1.0" in body
