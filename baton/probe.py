"""Plain-HTTP side ports: liveness and readiness probes that reveal nothing else, and the
Prometheus ``/metrics`` endpoint."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer
from typing import TYPE_CHECKING, Any

from baton.errors import TransportError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)


def check_listen(key: str, value: str) -> None:
    """Checks that ``value`` is empty or ``host:port``.

    Raises:
        ValueError: it is neither (the message names ``key``).
    """
    host, sep, port = value.rpartition(":")
    if value and not (sep and host and port.isdigit() and int(port) < 65536):
        raise ValueError(f"'{key}' must be host:port, not {value!r}")


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` as the host to bind (IPv6 without its brackets) and the port."""
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeConfig:
    """The ``[probe]`` table: liveness and readiness over plain HTTP, off by default.

    ``GET /livez`` answers 200 ``ok`` while the process serves; ``GET /readyz`` answers 200
    ``ok`` when it is ready (the coordinator: its gRPC port serves; a site: registered with
    the coordinator) and 503 ``not ready`` otherwise. Nothing else is served: no client
    certificate is needed, and no name, version or state is revealed.

    Example::

        [probe]
        listen = "127.0.0.1:8080"
    """

    listen: str = ""
    """Address of the probes (``host:port``, an IPv6 host in brackets as in ``[::1]:8080``;
    port 0 picks a free one); empty: off."""

    def __post_init__(self) -> None:
        check_listen("probe.listen", self.listen)


class SidePort:
    """A plain-HTTP server on its own address, beside a process's gRPC port; off when the
    address is empty.

    Args:
        listen: ``host:port`` (port 0 picks a free one), or empty for off.
    """

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self._httpd: BaseServer | None = None
        self.port = 0
        """The bound port once started; 0 when off."""

    def start(self) -> None:
        """Starts serving in a background thread, when ``listen`` is set.

        Raises:
            TransportError: The address cannot be bound.
        """
        if self.listen:
            self._httpd = self._bind(self.listen)
            address = self._httpd.server_address
            self.port = int(address[1]) if isinstance(address, tuple) else 0

    def stop(self) -> None:
        """Stops serving; the port is free when it returns."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _bind(self, listen: str) -> BaseServer:
        """Binds ``listen`` and serves it in a background thread."""
        raise NotImplementedError


HOP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Histogram bounds (seconds) of a hop's duration, toy models to LLM hops: the same for the
coordinator's ``baton_hop_duration_seconds`` and a site's ``baton_site_hop_duration_seconds``,
so the two compare bucket by bucket."""


class MetricsPort(SidePort):
    """Serves a Prometheus registry at ``/metrics``.

    Args:
        listen: ``host:port``, or empty for off.
        registry: What it serves.
    """

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        super().__init__(listen)
        self.registry = registry

    def _bind(self, listen: str) -> BaseServer:
        return serve_metrics(listen, self.registry)


class ProbeServer(SidePort):
    """Serves ``/livez`` and ``/readyz`` on ``config.listen`` in a background thread.

    Args:
        config: The ``[probe]`` table; :meth:`start` does nothing when it has no address.
        ready: Whether the process is ready for work now.
    """

    def __init__(self, config: ProbeConfig, ready: Callable[[], bool]) -> None:
        super().__init__(config.listen)
        self._ready = ready

    def _bind(self, listen: str) -> BaseServer:
        host, port = split_listen(listen)
        ready = self._ready

        class Handler(BaseHTTPRequestHandler):
            def version_string(self) -> str:
                return "probe"  # no software name or version

            def do_GET(self) -> None:
                if self.path == "/livez":
                    self._answer(200, b"ok\n")
                elif self.path == "/readyz":
                    ok = ready()
                    self._answer(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes come every few seconds: no log line each

        server = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            httpd = server((host, port), Handler)
        except OSError as exc:
            why = exc.strerror or exc
            raise TransportError(f"cannot serve probes on {listen}: {why}") from None
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, name="probe", daemon=True).start()
        shown = listen.rpartition(":")[0]
        logger.info("probes on http://%s:%d/livez and /readyz", shown, httpd.server_address[1])
        return httpd


class _IPv6Server(ThreadingHTTPServer):
    """The probe server on an IPv6 address (``[::1]:8080``)."""

    address_family = socket.AF_INET6


def serve_metrics(listen: str, registry: CollectorRegistry) -> WSGIServer:
    """Serves ``registry`` at ``http://listen/metrics`` in a background thread; stop it with
    ``shutdown()`` and ``server_close()``.

    Raises:
        TransportError: The address cannot be bound.
    """
    from prometheus_client import start_http_server

    host, port = split_listen(listen)
    try:
        httpd, _ = start_http_server(port, host, registry)
    except OSError as exc:
        raise TransportError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    logger.info("metrics on http://%s:%d/metrics", listen.rpartition(":")[0], httpd.server_port)
    return httpd
