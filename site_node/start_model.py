"""Hop 0 from a start model: the model a plan pins with ``[model] start_from``, sealed to
the plan's sites by the study owner who signed the plan (``baton submit --start-from``).

The start model is the input of hop 0, as hop ``k - 1``'s output is the input of hop
``k``: it is sealed as hop 0 by the owner, names the signed plan as its predecessor, and
is remembered by the site's replay guard as the input of hop 0 (at index -1, where every
hop's input is remembered at the index before it). Hop 0's own output still names the
plan as its predecessor (the chain rule of :mod:`baton.security.chain`): the start model
is bound to the run by the plan's pin, which the owner signed.
"""

from __future__ import annotations

from pathlib import Path

from baton.domain import Assignment
from baton.errors import ModelError, SealError
from baton.plan import RunPlan
from baton.security.replay import ReplayGuard, Verdict
from baton.wire.channel import sha256_file

START_HOP = 0
"""The hop index the owner seals a start model as: the hop it is the input of."""


class StartGuard:
    """A site's replay guard seen through the start model's hop index: a start model
    (sealed as hop 0) is remembered as the input of hop 0, at index -1, so hop 0's own
    output (hop index 0) stays fresh for the site that receives it, and a start model
    offered after any later input of the run was accepted is a rollback."""

    def __init__(self, inner: ReplayGuard) -> None:
        self._inner = inner

    def check(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for the start model's manifest without recording it."""
        return self._inner.check(run_id, hop_index - 1, manifest_hash)

    def accept(self, run_id: str, hop_index: int, manifest_hash: str) -> Verdict:
        """Returns the verdict for the start model's manifest and records it if fresh."""
        return self._inner.accept(run_id, hop_index - 1, manifest_hash)


def check_start_input(a: Assignment, plan: RunPlan) -> bool:
    """Whether hop ``a`` (index 0) starts from a sealed start model: exactly when the plan
    pins one.

    Raises:
        SealError: ``wrong_context``: the plan pins a start model and the hop came without
            one, or the hop came with a model the plan does not pin.
    """
    pinned = plan.model.start_from
    if pinned and a.input is None:
        raise SealError(
            "wrong_context",
            f"hop 1 of run {a.run_id} arrived without the start model its plan pins ({pinned})",
            run_id=a.run_id,
            hop=a.hop_index,
        )
    if not pinned and a.input is not None:
        raise SealError(
            "wrong_context",
            f"hop 1 of run {a.run_id} arrived with a model, but its plan pins no start model "
            "([model] start_from): the first hop builds its model from the plan",
            run_id=a.run_id,
            hop=a.hop_index,
        )
    return bool(pinned)


def check_start_hash(a: Assignment, plan: RunPlan, plain: Path) -> None:
    """Refuses an opened start model whose file is not the one the plan pins.

    Raises:
        ModelError: The file's SHA-256 differs from ``[model] start_from`` (both named).
    """
    actual = f"sha256:{sha256_file(plain)}"
    if actual != plan.model.start_from:
        raise ModelError(
            f"the start model of run {a.run_id} is {actual}, but its plan pins "
            f"{plan.model.start_from} ([model] start_from)",
            run_id=a.run_id,
            hop=a.hop_index,
        )
