"""How a site treats a failed call to the coordinator: retry it, give up the hop, or stop.

Every gRPC status falls in one of three classes (:func:`failure_class`):

- ``transient``: the coordinator was unreachable or slow (``UNAVAILABLE``,
  ``DEADLINE_EXCEEDED``, ``CANCELLED``, ``UNKNOWN``; raised as
  :class:`baton.errors.TransportError`), or answered but could not serve the call
  (``INTERNAL``, ``RESOURCE_EXHAUSTED``, ``ABORTED``; raised as
  :class:`baton.errors.ServerFault`). The daemon reconnects after a jittered,
  exponentially growing pause (:class:`Backoff`) and the hop is delivered again, resuming
  from what the site kept; after :data:`HOP_FAULT_LIMIT` server faults in a row on one hop
  (:class:`HopFaults`) the hop fails once, as a refusal would.
- ``hop``: the coordinator answered and refused the call for good (``NOT_FOUND``,
  ``FAILED_PRECONDITION``, ``INVALID_ARGUMENT``, ``OUT_OF_RANGE``, ``ALREADY_EXISTS``,
  ``DATA_LOSS``, ``UNIMPLEMENTED``): a deleted input blob, a blob store that cannot write,
  a hop that is no longer this site's. Raised as :class:`baton.errors.Rejected`; the hop
  fails once, with a reason, and is not retrained.
- ``site``: the coordinator refused this site (``PERMISSION_DENIED``,
  ``UNAUTHENTICATED``). Raised as :class:`baton.errors.Denied`; the daemon stops.

A transfer that loses the coordinator mid-stream does not wait for the daemon: it keeps
the bytes it moved and tries again itself, with the same back-off, for a bounded time
(:class:`Patience`), so a partition of tens of seconds costs no retraining.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal

import grpc

FailureClass = Literal["transient", "hop", "site"]
"""What a failed call means for the site (see the module docstring)."""

_SITE = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED})
_HOP = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


_FAULT = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)
HOP_FAULT_LIMIT = 3
"""Deliveries of one hop that may end in a server fault before the hop fails."""


def is_server_fault(code: grpc.StatusCode) -> bool:
    """Whether ``code`` says the coordinator answered but could not serve the call."""
    return code in _FAULT


class HopFaults:
    """Counts, per hop, the deliveries in a row that ended in a server fault.

    Args:
        limit: Faults of one hop after which it is given up.
    """

    def __init__(self, limit: int = HOP_FAULT_LIMIT) -> None:
        self._limit = limit
        self._counts: dict[tuple[str, int], int] = {}

    def give_up(self, run_id: str, hop_index: int) -> bool:
        """Counts a fault of the hop; whether it reached the limit."""
        key = (run_id, hop_index)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key] >= self._limit

    def clear(self, run_id: str, hop_index: int) -> None:
        """Forgets the hop's faults (it ended)."""
        self._counts.pop((run_id, hop_index), None)


def failure_class(code: grpc.StatusCode) -> FailureClass:
    """The class of a call that failed with ``code``; anything not named is transient."""
    if code in _SITE:
        return "site"
    if code in _HOP:
        return "hop"
    return "transient"


class Backoff:
    """Pauses between retries: exponential growth from ``initial`` to ``maximum``, each
    pause drawn uniformly from its upper half ("equal jitter"), so sites that lost the
    coordinator together do not come back in step.

    Args:
        initial: Upper bound of the first pause, in seconds (> 0).
        maximum: Largest upper bound, in seconds (>= ``initial``).
        rng: Source of the jitter (seeded in tests).
    """

    def __init__(self, initial: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, not {initial} and {maximum}")
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()
        self._ceiling = initial
        self.failures = 0
        """Failures since the last :meth:`reset`."""

    def next_delay(self) -> float:
        """Counts a failure and returns the pause before the next try."""
        self.failures += 1
        ceiling = self._ceiling
        self._ceiling = min(ceiling * 2, self._maximum)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Starts again from ``initial`` (after a call or session that succeeded)."""
        self._ceiling = self._initial
        self.failures = 0


RESUME_WINDOW_SECONDS = 180.0
"""How long a transfer keeps trying to reach a lost coordinator before it gives up."""
RESUME_INITIAL_SECONDS = 0.5
"""Upper bound of a transfer's first pause after losing the coordinator."""
RESUME_MAX_SECONDS = 5.0
"""Largest pause between a transfer's tries."""


class Patience:
    """A transfer's retries after losing the coordinator: jittered, growing pauses
    (:class:`Backoff`) for at most ``window`` seconds counted from the first failure in a
    row; a try that moved bytes (:meth:`progressed`) starts the count again.

    Args:
        window: Seconds of failures in a row after which :meth:`pause` gives up (>= 0).
        backoff: Pauses between tries.
        clock: Monotonic seconds (a fake one in tests).
        sleep: Waits a number of seconds (a fake one in tests).
    """

    def __init__(
        self,
        window: float = RESUME_WINDOW_SECONDS,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if window < 0:
            raise ValueError(f"need a window >= 0 seconds, not {window}")
        self._window = window
        self._backoff = backoff or Backoff(RESUME_INITIAL_SECONDS, RESUME_MAX_SECONDS)
        self._clock = clock
        self._sleep = sleep
        self._since: float | None = None

    def pause(self) -> bool:
        """Counts a failure; waits before the next try and returns True, or returns False
        at once when the next try would start past the window."""
        now = self._clock()
        if self._since is None:
            self._since = now
        delay = self._backoff.next_delay()
        if now + delay - self._since > self._window:
            return False
        self._sleep(delay)
        return True

    def progressed(self) -> None:
        """A try moved bytes: the failures in a row are over."""
        self._since = None
        self._backoff.reset()
