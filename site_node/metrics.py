"""The site's Prometheus metrics: hops, hop seconds, bytes moved, samples/s, rejections."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from baton.probe import HOP_BUCKETS, MetricsPort

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from baton.domain import BlobRef
    from site_node.client import (
        Announcement,
        AssignmentStream,
        CoordinatorClient,
        HopDone,
        Registration,
        UploadStatus,
    )
    from site_node.config import SiteMetricsConfig


class SiteMetrics:
    """The counters a site keeps about its hops, on their own registry.

    They show counts, sizes and timings, never run ids, data or keys; a rejection is
    labelled with its category alone (the reasons the coordinator also learns).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hops = Counter(
            "baton_site_hops", "Hops this site finished, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.hop_seconds = Histogram(
            "baton_site_hop_duration_seconds",
            "Wall time of completed hops at this site: receive, train, seal and upload.",
            buckets=HOP_BUCKETS,
            registry=self.registry,
        )
        self.bytes = Counter(
            "baton_site_model_bytes", "Sealed model bytes moved, by direction (in, out).",
            ["direction"], registry=self.registry,
        )  # fmt: skip
        self.samples_per_second = Gauge(
            "baton_site_samples_per_second",
            "Training examples per second of training time in the latest completed hop.",
            registry=self.registry,
        )
        self.rejections = Counter(
            "baton_site_rejections", "Hops this site refused or failed, by reason.", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        for outcome in ("completed", "failed"):
            self.hops.labels(outcome)
        for direction in ("in", "out"):
            self.bytes.labels(direction)

    def hop_completed(
        self, *, seconds: float, bytes_in: int, bytes_out: int, examples: int, train_seconds: float
    ) -> None:
        """Counts a hop this site completed."""
        self.hops.labels("completed").inc()
        self.hop_seconds.observe(seconds)
        self.bytes.labels("in").inc(bytes_in)
        self.bytes.labels("out").inc(bytes_out)
        if train_seconds > 0:
            self.samples_per_second.set(examples / train_seconds)

    def hop_failed(self, reason: str) -> None:
        """Counts a hop this site failed or refused, with its reason category."""
        self.hops.labels("failed").inc()
        self.rejections.labels(reason).inc()


METRICS = SiteMetrics()
"""This process's site metrics (one site daemon per process)."""


class SiteMetricsEndpoint(MetricsPort):
    """The site's plain-HTTP ``/metrics`` endpoint (keep it local, or open to the scraper).

    Args:
        config: The ``[metrics]`` table; :meth:`start` does nothing when it has no address.
        metrics: What it serves.
    """

    def __init__(self, config: SiteMetricsConfig, metrics: SiteMetrics = METRICS) -> None:
        super().__init__(config.listen, metrics.registry)
        self.metrics = metrics


class MeteredClient:
    """A :class:`~site_node.client.CoordinatorClient` that counts the hops it reports.

    A hop's time runs from this site's first call about it (its download, or its first
    metrics report) to its completion; its bytes are the blobs downloaded and uploaded.

    Args:
        client: The port it forwards every call to.
        metrics: Where it counts.
        clock: Monotonic seconds (for tests).
    """

    def __init__(
        self,
        client: CoordinatorClient,
        metrics: SiteMetrics = METRICS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._started: dict[tuple[str, int], float] = {}
        self._bytes_in: dict[tuple[str, int], int] = {}

    def register(self, announcement: Announcement) -> Registration:
        """Forwarded."""
        return self._client.register(announcement)

    def heartbeat(self) -> None:
        """Forwarded."""
        self._client.heartbeat()

    def watch_assignments(self) -> AssignmentStream:
        """Forwarded."""
        return self._client.watch_assignments()

    def download(
        self,
        *,
        run_id: str,
        hop_index: int,
        blob: BlobRef,
        dest: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Forwarded; starts the hop's clock and counts the blob's bytes in."""
        self._started.setdefault((run_id, hop_index), self._clock())
        self._client.download(
            run_id=run_id, hop_index=hop_index, blob=blob, dest=dest, progress=progress
        )
        self._bytes_in[(run_id, hop_index)] = blob.size

    def upload(
        self, *, run_id: str, hop_index: int, source: Path, manifest: bytes | None = None
    ) -> BlobRef:
        """Forwarded."""
        return self._client.upload(
            run_id=run_id, hop_index=hop_index, source=source, manifest=manifest
        )

    def upload_status(self, transfer_id: str) -> UploadStatus:
        """Forwarded."""
        return self._client.upload_status(transfer_id)

    def report_metrics(
        self, *, run_id: str, hop_index: int, stage: str, metrics: Mapping[str, float]
    ) -> None:
        """Forwarded; starts the hop's clock if nothing did."""
        self._started.setdefault((run_id, hop_index), self._clock())
        self._client.report_metrics(
            run_id=run_id, hop_index=hop_index, stage=stage, metrics=metrics
        )

    def complete_hop(self, done: HopDone) -> None:
        """Forwarded; counts the hop completed once the coordinator took it."""
        self._client.complete_hop(done)
        key = (done.run_id, done.hop_index)
        started = self._started.pop(key, None)
        self._metrics.hop_completed(
            seconds=done.train_seconds if started is None else self._clock() - started,
            bytes_in=self._bytes_in.pop(key, 0),
            bytes_out=done.output.size,
            examples=done.num_examples,
            train_seconds=done.train_seconds,
        )

    def fail_hop(self, *, run_id: str, hop_index: int, reason: str, message: str) -> None:
        """Counts the hop failed with ``reason``, then forwards."""
        self._started.pop((run_id, hop_index), None)
        self._bytes_in.pop((run_id, hop_index), None)
        self._metrics.hop_failed(reason)
        self._client.fail_hop(run_id=run_id, hop_index=hop_index, reason=reason, message=message)
