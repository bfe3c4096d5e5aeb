"""Fault policy decisions: what a run does with a lost site or a failed hop.

Pure functions over plain data (no store, no clock), so every rule of the plan's
``[faults]`` section is tested in microseconds; :mod:`coordinator.engine.recovery`
gathers the facts and carries the decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from baton.plan_faults import FaultsSection


class Fault(StrEnum):
    """What went wrong with a hop."""

    LOST = "lost"
    """The site's lease expired, or the hop missed a deadline."""
    FAILED = "failed"
    """The site reported that it cannot complete the hop."""
    REVOKED = "revoked"
    """The site of a hop not yet assigned holds a revoked certificate: the hop before
    cannot be sealed to it. Met by ``on_lost_site``; ``retry`` waits instead (the same
    certificate stays revoked; the site may be certified again)."""


class Action(StrEnum):
    """What the coordinator does about it."""

    WAIT = "wait"
    RETRY = "retry"
    SKIP = "skip"
    REROUTE = "reroute"
    ABORT = "abort"


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultFacts:
    """What the coordinator knows when it decides."""

    hop_index: int
    site_id: str
    run_id: str = ""
    """The run, for the command a failure's reason names."""
    retries: int = 0
    """Times this hop was already offered again to its site."""
    skipped_this_cycle: int = 0
    """Hops of this hop's cycle already lost to skip or reroute."""
    sites_remaining: int = 1
    """Sites of the run that are online, not revoked and not the lost one."""
    resealing: bool = False
    """The hop was a re-seal for a new recipient (its output exists already)."""
    previous_site: str = ""
    """The site of the hop before (empty for hop 0)."""
    previous_alive: bool = True
    """Whether the previous hop's site is online and not revoked (it must re-seal)."""
    escrow_hop: int = -1
    """The newest completed hop whose stored output the study owner's escrow opens (-1:
    none, or the plan asks for no escrow); gathered only when the previous site is gone."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """An action with the sentence the owner reads in ``baton watch``."""

    action: Action
    reason: str


def decide(policy: FaultsSection, fault: Fault, facts: FaultFacts) -> Decision:
    """Applies the plan's ``[faults]`` policy to one fault.

    Order: a failed re-seal ends the run (its hop cannot be replaced without losing two);
    then the configured action, each within its bound (``retry`` waits for a revoked
    site); ``skip``/``reroute`` also need ``min_sites`` sites left and the previous site
    to re-seal.
    """
    where = f"hop {facts.hop_index + 1} at {facts.site_id}"  # people count from 1
    what = {
        Fault.LOST: "was lost",
        Fault.FAILED: "failed",
        Fault.REVOKED: "has a revoked certificate",
    }[fault]
    if facts.resealing:
        return Decision(
            action=Action.ABORT,
            reason=f"{where} {what} while re-sealing its output for a new recipient",
        )
    configured = policy.on_failed_hop if fault is Fault.FAILED else policy.on_lost_site
    if configured == "fail":
        return Decision(action=Action.ABORT, reason=f"{where} {what}")
    if fault is Fault.REVOKED and configured in ("wait", "retry"):
        return Decision(
            action=Action.WAIT, reason=f"{where} {what}; waiting for the site to be certified again"
        )
    if configured == "wait":
        return Decision(action=Action.WAIT, reason=f"{where} {what}; waiting for the site")
    if configured == "retry":
        if facts.retries >= policy.max_retries:
            return Decision(
                action=Action.ABORT,
                reason=f"{where} {what} after {facts.retries} retries (max_retries)",
            )
        return Decision(
            action=Action.RETRY,
            reason=f"{where} {what}; retry {facts.retries + 1} of {policy.max_retries}",
        )
    if facts.sites_remaining < policy.min_sites:
        return Decision(
            action=Action.ABORT,
            reason=f"{where} {what} and only {facts.sites_remaining} sites remain "
            f"(min_sites = {policy.min_sites})",
        )
    if facts.skipped_this_cycle >= policy.max_skipped_per_cycle:
        return Decision(
            action=Action.ABORT,
            reason=f"{where} {what} and its cycle already lost {facts.skipped_this_cycle} "
            f"hops (max_skipped_per_cycle = {policy.max_skipped_per_cycle})",
        )
    if facts.hop_index and not facts.previous_alive:
        return Decision(
            action=Action.ABORT,
            reason=f"{where} {what} and the previous site {facts.previous_site} is gone too: "
            "nobody can re-seal the last completed hop"
            + escrow_hint(facts.escrow_hop, facts.run_id),
        )
    action = Action.SKIP if configured == "skip" else Action.REROUTE
    return Decision(action=action, reason=f"{where} {what}; {action.value}")


def escrow_hint(escrow_hop: int, run_id: str) -> str:
    """The end of a failed run's reason when the owner's escrow opens hop ``escrow_hop``
    (0-based; -1 for none): what the study owner can restart from, the command that
    fetches it and the one that starts a new run from it."""
    if escrow_hop < 0:
        return ""
    n = escrow_hop + 1
    return (
        f"; the owner can restart from the escrowed hop {n}: "
        f"`baton fetch {run_id} hop-{n}.safetensors --hop {n}` opens its sealed output, and "
        f"`baton submit PLAN --start-from hop-{n}.safetensors` trains on from it (the plan "
        "pinning the file's SHA-256 as [model] start_from)"
    )
