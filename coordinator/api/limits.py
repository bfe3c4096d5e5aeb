"""Limits on what a participant sends, checked at the gRPC edge before anything is logged,
stored or audited, and caps on the streams one participant may hold open."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc

from baton.errors import ConfigError

MAX_ID_CHARS = 128
"""Longest run id, transfer id or hash a request may carry."""
MAX_TEXT_CHARS = 1024
"""Longest free-text field (a stage name, a reason, a cancellation note)."""
MAX_METRICS = 64
"""Most entries in one metrics map: every stored event then fits a wire message."""
MAX_METRIC_NAME_CHARS = 64
"""Longest metric name."""
MAX_UINT63 = (1 << 63) - 1
"""Largest count, offset or sequence number the store can hold (a signed 64-bit integer)."""


def check_id(field: str, value: str) -> str:
    """Returns ``value`` if it is at most :data:`MAX_ID_CHARS` characters.

    Raises:
        ConfigError: naming the field and the limit, never echoing the value.
    """
    if len(value) > MAX_ID_CHARS:
        raise ConfigError(f"{field} is {len(value)} characters long; at most {MAX_ID_CHARS}")
    return value


def check_text(field: str, value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Returns ``value`` if it is at most ``limit`` characters (else ConfigError)."""
    if len(value) > limit:
        raise ConfigError(f"{field} is {len(value)} characters long; at most {limit}")
    return value


def printable(text: str) -> str:
    """``text`` with every control character (newlines, escapes) as ``\\uXXXX``, so a
    site's words never forge a log line or drive a terminal."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def check_count(field: str, value: int) -> int:
    """Returns ``value`` if it fits the store's integers (0..2^63-1; else ConfigError)."""
    if not 0 <= value <= MAX_UINT63:
        raise ConfigError(f"{field} must be between 0 and {MAX_UINT63}")
    return value


def check_metrics(field: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """A copy of ``metrics`` if it has at most :data:`MAX_METRICS` finite values under
    names of at most :data:`MAX_METRIC_NAME_CHARS` characters.

    Raises:
        ConfigError: naming the field and the limit broken.
    """
    if len(metrics) > MAX_METRICS:
        raise ConfigError(f"{field} has {len(metrics)} entries; at most {MAX_METRICS}")
    for name, value in metrics.items():
        if len(name) > MAX_METRIC_NAME_CHARS:
            raise ConfigError(
                f"{field} has a name of {len(name)} characters; at most {MAX_METRIC_NAME_CHARS}"
            )
        if not math.isfinite(value):
            raise ConfigError(f"{field} has a value that is not a finite number")
    return dict(metrics)


class StreamCaps:
    """Counts the long calls (assignment streams, uploads) each participant holds open,
    and all of them together, so neither one participant nor many can take every worker
    thread and starve heartbeats and admin calls.

    Args:
        per_party: Most long calls of one kind one participant may hold at once.
        total: Most long calls of all participants together.
    """

    def __init__(self, *, per_party: int, total: int) -> None:
        self.per_party = per_party
        self.total = total
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._all = 0

    @contextmanager
    def hold(self, party: str, what: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Holds a slot for ``party`` while the block runs; aborts the call with
        RESOURCE_EXHAUSTED (which sites retry later) when none is free."""
        with self._lock:
            mine = self._open.get(party, 0)
            full = mine >= self.per_party or self._all >= self.total
            if not full:
                self._open[party] = mine + 1
                self._all += 1
        if full:
            why = (
                f"{party} already holds {mine} open {what}; at most {self.per_party}"
                if mine >= self.per_party
                else f"the coordinator serves {self.total} open {what} already; retry later"
            )
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        try:
            yield
        finally:
            with self._lock:
                left = self._open[party] - 1
                if left:
                    self._open[party] = left
                else:
                    del self._open[party]
                self._all -= 1

    def count(self, party: str) -> int:
        """Calls ``party`` holds open now."""
        with self._lock:
            return self._open.get(party, 0)
