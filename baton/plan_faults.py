"""The run plan's ``[faults]`` section: what the coordinator does when a site is lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultAction = Literal["wait", "retry", "skip", "reroute"]
"""What the coordinator does with a hop whose site is lost or failed it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultsSection:
    """How a run survives its sites (see ``docs/site-failures.md``).

    A site is *lost* when its lease expires (no heartbeat for the coordinator's
    ``lease_seconds``) while it holds a hop, or when the hop misses a deadline (pick-up,
    training progress, upload); a hop *fails* when its site reports it cannot complete it.
    Each is met by one action:

    - ``wait``: keep the hop where it is; the owner is warned ("site offline since ...")
      within two lease periods and the hop goes on when the site returns.
    - ``retry``: offer the hop to the same site again, at most ``max_retries`` times.
    - ``skip``: the hop's site sits this cycle out; the next site of the cycle takes its
      input from the last completed hop, which its site seals again for it.
    - ``reroute``: as ``skip``, but the ordering strategy picks which site not yet visited
      this cycle goes next.

    The defaults keep the behaviour of runs without a ``[faults]`` section: a lost site is
    waited for, a failed hop fails the run.
    """

    on_lost_site: FaultAction = "wait"
    """Action for a hop whose site is lost (lease expired or a hop deadline missed)."""
    on_failed_hop: FaultAction | Literal["fail"] = "fail"
    """Action for a hop its site reported failed; ``fail`` (the default) fails the run."""
    max_retries: int = 2
    """Most times one hop is offered to its site again under ``retry``; then the run fails."""
    max_skipped_per_cycle: int = 1
    """Most hops one cycle may lose to ``skip`` or ``reroute``; one more fails the run."""
    min_sites: int = 1
    """Under ``skip`` or ``reroute``, the run fails instead when fewer of its other sites
    remain online (lease live, not revoked)."""
    require_online: bool = False
    """Refuse a run whose plan names an offline or revoked site (else: a warning event)."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_retries <= 100:
            raise ValueError(f"'max_retries' must be between 0 and 100, not {self.max_retries}")
        if not 0 <= self.max_skipped_per_cycle <= 1000:
            raise ValueError(
                "'max_skipped_per_cycle' must be between 0 and 1000, "
                f"not {self.max_skipped_per_cycle}"
            )
        if not 1 <= self.min_sites <= 1000:
            raise ValueError(f"'min_sites' must be between 1 and 1000, not {self.min_sites}")
