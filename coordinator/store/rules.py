"""The rules both stores enforce alike: hop transitions, run updates, new hops, metrics."""

from __future__ import annotations

from baton.errors import ConflictError
from coordinator.store.base import HopRecord, HopState, RunRecord, RunState

HOP_TRANSITIONS: dict[HopState, frozenset[HopState]] = {
    HopState.ASSIGNED: frozenset({HopState.PENDING}),
    HopState.COMPLETED: frozenset({HopState.ASSIGNED}),
    HopState.FAILED: frozenset({HopState.PENDING, HopState.ASSIGNED}),
}
"""For each target hop state, the states a hop may move to it from."""

REOPEN_FROM = frozenset({HopState.ASSIGNED, HopState.COMPLETED, HopState.FAILED})
"""States a hop may be offered again from (``Store.reopen_hop``): a retry, or a re-seal."""


def check_reopen(hop: HopRecord) -> None:
    """Raises ``ConflictError`` unless ``hop`` may be offered to its site again."""
    if hop.state not in REOPEN_FROM:
        raise ConflictError(
            f"hop {hop.hop_index} of run {hop.run_id!r} is {hop.state.value}; "
            "it cannot be offered again",
            run_id=hop.run_id,
            hop=hop.hop_index,
        )


def check_replan(run_id: str, from_index: int, old: list[HopRecord], new: list[HopRecord]) -> None:
    """Raises ``ConflictError`` unless hops from ``from_index`` on (``old``) may be replaced
    by ``new``: none of ``old`` completed, ``new`` are PENDING hops from ``from_index`` on."""
    done = [h.hop_index for h in old if h.state is HopState.COMPLETED]
    if done:
        raise ConflictError(
            f"run {run_id!r}: completed hop {done[0]} cannot be planned again", run_id=run_id
        )
    check_new_hops(run_id, from_index, new)


def check_hop_transition(hop: HopRecord, target: HopState) -> None:
    """Raises ``ConflictError`` unless ``hop`` may move to ``target`` (shared with SQLite)."""
    if hop.state not in HOP_TRANSITIONS[target]:
        raise ConflictError(
            f"hop {hop.hop_index} of run {hop.run_id!r} is {hop.state.value}; "
            f"it cannot become {target.value}",
            run_id=hop.run_id,
            hop=hop.hop_index,
            site_id=hop.site_id,
        )


def check_run_update(run: RunRecord, state: RunState) -> None:
    """Raises ``ConflictError`` unless ``run`` is RUNNING and ``state`` is terminal."""
    if run.state is not RunState.RUNNING:
        raise ConflictError(f"run {run.run_id!r} is already {run.state.value}", run_id=run.run_id)
    if state is RunState.RUNNING:
        raise ConflictError(
            f"run {run.run_id!r} is running; update_run needs a terminal state",
            run_id=run.run_id,
        )


def check_new_hops(run_id: str, existing: int, hops: list[HopRecord]) -> None:
    """Raises ``ConflictError`` unless ``hops`` are PENDING hops of the run, at the next indices.

    Args:
        run_id: The run the hops are added to.
        existing: How many hops the run has already (its next index).
        hops: The hops to add, in order.
    """
    for offset, hop in enumerate(hops):
        if hop.run_id != run_id:
            raise ConflictError(
                f"hop {hop.hop_index} names run {hop.run_id!r}, not {run_id!r}", run_id=run_id
            )
        if hop.hop_index != existing + offset:
            raise ConflictError(
                f"run {run_id!r} expects hop {existing + offset} next, not {hop.hop_index}",
                run_id=run_id,
                hop=hop.hop_index,
            )
        if hop.state != HopState.PENDING:
            raise ConflictError(
                f"new hop {hop.hop_index} must be pending, not {hop.state}",
                run_id=run_id,
                hop=hop.hop_index,
            )


def as_floats(metrics: dict[str, float]) -> dict[str, float]:
    """A fresh copy of a metrics dict with ``str`` keys and ``float`` values."""
    return {str(k): float(v) for k, v in metrics.items()}
