"""The ordering interface: what a strategy sees, what it returns, and how it draws randomness."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from baton.domain import DataProfile


@dataclass(frozen=True, kw_only=True, slots=True)
class HopOutcome:
    """What one completed hop taught us: where it ran and how the model fared there."""

    cycle: int
    """The cycle the hop belonged to (0-based)."""
    site_id: str
    """The site that trained."""
    metrics_before: Mapping[str, float] = field(default_factory=dict)
    """Validation metrics of the incoming model at that site, before training."""
    metrics_after: Mapping[str, float] = field(default_factory=dict)
    """Validation metrics at that site after training."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeOutcome:
    """A probe run: one order trained end to end, its final model measured at the sites.

    Probes cost a whole extra training run each. In a live federation they are earlier
    runs whose plan had every site evaluate the final model (``[run] evaluate_at_sites``),
    named in a later plan's ``[ordering] probe_runs``; the ordering lab simulates them
    (``sim.lab``).
    """

    order: tuple[str, ...]
    """The order of one cycle, repeated in every cycle of the probe run."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Validation metrics of the final model, averaged over the sites' validation splits
    (weighted by their sizes)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderingContext:
    """Everything a strategy may use to order one cycle; strategies MUST NOT mutate it."""

    sites: tuple[str, ...]
    """The run plan's sites, in the plan's order; no duplicates."""
    profiles: Mapping[str, DataProfile] = field(default_factory=dict)
    """Published data profiles by site id (a site may be missing)."""
    history: tuple[HopOutcome, ...] = ()
    """Completed hops of the run so far, oldest first."""
    cycle: int = 0
    """The cycle to order (0-based)."""
    seed: int = 0
    """The run plan's seed."""
    probes: tuple[ProbeOutcome, ...] = ()
    """Probe runs made for this run so far (the learned strategy's richest data)."""
    metric: str = "accuracy"
    """The run's primary metric (the plan's ``[task] metric``): what strategies that rank
    by a metric use unless their ``metric`` option names another."""
    higher_is_better: bool = True
    """Whether a higher ``metric`` is better (the plan's ``[task] higher_is_better``)."""

    def __post_init__(self) -> None:
        if len(set(self.sites)) != len(self.sites):
            raise ValueError(f"'sites' must not repeat a site: {list(self.sites)}")
        if self.cycle < 0:
            raise ValueError(f"'cycle' must not be negative, not {self.cycle}")


class OrderingStrategy(Protocol):
    """Chooses the order in which the sites train during one cycle.

    Constraints:
    - ``cycle_order`` MUST return a permutation of ``ctx.sites``.
    - It MUST be a pure function of ``ctx``: equal contexts give equal orders, in any
      process and after any restart, so the coordinator can recompute a schedule.
      Randomness MUST come only from ``cycle_rng(ctx.seed, ctx.cycle)``.
    - It MUST NOT mutate ``ctx`` and MUST NOT do I/O.
    """

    name: str
    """The name the strategy is registered under (``ordering.strategy`` in a plan)."""

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        """Returns the order of ``ctx.sites`` for cycle ``ctx.cycle``."""
        ...


@runtime_checkable
class ProbePlanner(Protocol):
    """A strategy that chooses its own probe runs, one at a time.

    Whoever runs probes (the ordering lab; in a live federation, the study owner who
    submits probe runs) asks :meth:`next_probe`
    with the probes made so far in ``ctx.probes``, trains the order it returns end to
    end, measures the final model on the sites' validation splits, appends the
    outcome, and asks again until the budget is spent or it returns None.

    Constraints:
    - ``next_probe`` MUST return a permutation of ``ctx.sites`` or None.
    - It MUST be a pure function of ``ctx`` and ``budget``, with randomness only from
      ``cycle_rng(ctx.seed, ctx.cycle)``, and MUST NOT mutate ``ctx`` or do I/O.
    - The same order may be asked for again: the runner then trains it with a run seed
      it has not used for that order (a repetition).
    """

    def next_probe(self, ctx: OrderingContext, budget: int) -> tuple[str, ...] | None:
        """Returns the next order to probe, or None when more probes would not help.

        Args:
            ctx: The run's context; ``ctx.probes`` holds the probes made so far.
            budget: Probe runs the runner allows in all (made ones included).
        """
        ...


def cycle_rng(seed: int, cycle: int) -> random.Random:
    """Returns the random generator of one cycle of one run.

    Derivation (stable across processes and Python versions): the first 8 bytes of
    ``SHA-256(b"baton-ordering:<seed>:<cycle>")``, read big-endian as an unsigned
    integer, seed a fresh ``random.Random``. Distinct (seed, cycle) pairs therefore give
    independent-looking streams, and the same pair always gives the same stream.

    Args:
        seed: The run plan's seed.
        cycle: The cycle being ordered.

    Returns:
        A new generator; callers own it.
    """
    digest = hashlib.sha256(f"baton-ordering:{seed}:{cycle}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
