"""The coordinator's Prometheus metrics: runs, hops and their durations, relayed bytes, sites,
lease expiries, and RPC latencies by status code (the refusals by reason)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from baton.probe import MetricsPort
from coordinator.hop_durations import HopDurations
from coordinator.store.base import HopState, RunState

if TYPE_CHECKING:
    from coordinator.config import MetricsConfig
    from coordinator.store.base import Store

logger = logging.getLogger(__name__)

RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
"""Histogram bounds (seconds) of RPC durations: heartbeats in milliseconds up to transfers
and event streams that last as long as a hop."""


class StateCollector(Collector):
    """Reads the state store at each scrape: runs by state, hops completed and failed and
    how long they took, the sealed bytes sites uploaded, registered and online sites, and
    the leases that expired.

    A finished run never changes again, so its counts are read once and kept; a running
    run's events are read from where the last scrape stopped.

    Args:
        store: The coordinator's state store.
        lease_seconds: A site heard from within this many seconds is online.
        lease_expiries: How many sites' leases expired so far
            (:meth:`~coordinator.engine.leases.HopWatch.expiries`).
        clock: Unix time in seconds (for tests).
    """

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        lease_expiries: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._lease_ms = lease_seconds * 1000
        self._lease_expiries = lease_expiries
        self._clock = clock
        self._finished: dict[str, tuple[int, int, int]] = {}
        self._durations = HopDurations(store)
        self._lock = threading.Lock()

    def _hop_counts(self, run_id: str, finished: bool) -> tuple[int, int, int]:
        """(completed, failed, uploaded bytes) of one run's hops."""
        if run_id in self._finished:
            return self._finished[run_id]
        hops = self._store.list_hops(run_id)
        counts = (
            sum(h.state is HopState.COMPLETED for h in hops),
            sum(h.state is HopState.FAILED for h in hops),
            sum(h.output.size for h in hops if h.state is HopState.COMPLETED and h.output),
        )
        if finished:
            self._finished[run_id] = counts
        return counts

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            runs = self._store.list_runs()
            totals = [0, 0, 0]
            for run in runs:
                counts = self._hop_counts(run.run_id, run.state is not RunState.RUNNING)
                totals = [a + b for a, b in zip(totals, counts, strict=True)]
            self._durations.update(runs)
            durations = self._durations.metric()
            sites = self._store.list_sites()
        by_state = GaugeMetricFamily("baton_runs", "Runs by state.", labels=["state"])
        for state in RunState:
            by_state.add_metric([state.value], sum(r.state is state for r in runs))
        yield by_state
        yield CounterMetricFamily(
            "baton_hops_completed", "Hops completed, over every stored run.", value=totals[0]
        )
        yield CounterMetricFamily(
            "baton_hops_failed", "Hops failed, over every stored run.", value=totals[1]
        )
        yield CounterMetricFamily(
            "baton_relayed_bytes",
            "Sealed model bytes sites uploaded in completed hops; the relay passes each on "
            "once more to the next site or the study owner.",
            value=totals[2],
        )
        yield durations
        now_ms = self._clock() * 1000
        yield GaugeMetricFamily("baton_sites_registered", "Registered sites.", value=len(sites))
        yield GaugeMetricFamily(
            "baton_sites_online",
            "Sites heard from within the lease.",
            value=sum(now_ms - s.last_seen_ms <= self._lease_ms for s in sites),
        )
        yield CounterMetricFamily(
            "baton_lease_expiries",
            "Sites whose lease expired (no heartbeat for the lease) while this process ran, "
            "once per absence.",
            value=self._lease_expiries(),
        )


_HANDLER_KINDS: tuple[tuple[str, Callable[..., Any], bool], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)
"""A handler's behaviour attribute, the function that wraps one, and whether it answers
with a stream (timed until its last message)."""


class RpcTimer(grpc.ServerInterceptor):
    """Times every RPC, streams included (until their last message), by method and the
    status code it ended with (``OK``, ``PERMISSION_DENIED``, ``INVALID_ARGUMENT``,
    ``RESOURCE_EXHAUSTED``, ...): the count of a code other than ``OK`` is the refusals
    for that reason. Both labels are bounded (the services' methods, gRPC's 17 codes).

    It is the server's first interceptor, so it sees every refusal the application makes:
    the peer gates, the limits, the stream caps and the error translator's codes. A call
    refused before the application (a failed TLS handshake, the server's cap on
    concurrent RPCs) is not counted. The code is the one the call's context holds after
    the handler: set by ``context.abort`` (the error translator's too) or
    ``context.set_code``; ``OK`` when none was set; ``UNKNOWN`` for an exception that no
    interceptor translated; ``CANCELLED`` for a stream the client left before its end.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "baton_rpc_duration_seconds",
            "Duration of RPCs served, by method and gRPC status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rpartition("/")[2]
        for kind, make, streams in _HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                timed = self._stream if streams else self._unary
                return make(  # type: ignore[no-any-return]
                    timed(behavior, method),
                    handler.request_deserializer,
                    handler.response_serializer,
                )
        return handler

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
            try:
                response = behavior(request, context)
                code = grpc.StatusCode.OK
                return response
            finally:
                self._observe(method, context, code, started)

        return timed

    def _stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
            try:
                yield from behavior(request, context)
                code = grpc.StatusCode.OK
            except GeneratorExit:  # grpc closes the stream: its client went away
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._observe(method, context, code, started)

        return timed

    def _observe(
        self,
        method: str,
        context: grpc.ServicerContext,
        fallback: grpc.StatusCode,
        started: float,
    ) -> None:
        """Records one call under the code its context holds, else ``fallback``."""
        held: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]  # not in stubs
        self.seconds.labels(method, (held or fallback).name).observe(time.perf_counter() - started)


class MetricsEndpoint(MetricsPort):
    """The plain-HTTP ``/metrics`` endpoint, on its own address (keep it local or behind a
    scraper's network policy: it shows counts, never names, keys or data).

    Args:
        config: The ``[metrics]`` table; :meth:`start` does nothing when it has no address.
        store: The state store the collector reads.
        lease_seconds: A site heard from within this many seconds is online.
        lease_expiries: How many sites' leases expired so far.
    """

    def __init__(
        self,
        config: MetricsConfig,
        store: Store,
        *,
        lease_seconds: float,
        lease_expiries: Callable[[], int],
    ) -> None:
        super().__init__(config.listen, CollectorRegistry(auto_describe=True))
        self.config = config
        self.registry.register(
            StateCollector(store, lease_seconds=lease_seconds, lease_expiries=lease_expiries)
        )
        self.interceptors: tuple[grpc.ServerInterceptor, ...] = (
            (RpcTimer(self.registry),) if config.listen else ()
        )
        """What the gRPC server adds to time its RPCs (nothing when metrics are off)."""
