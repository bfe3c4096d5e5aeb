"""The model families and what each owns: builder, arguments, parallel plans, traits.

As torchtitan's ``models/<family>/`` folders do, every family keeps in one module what the
rest of Baton asks about its models: how to build one (:mod:`.mlp`, :mod:`.logreg`,
:mod:`.causal_lm`, :mod:`.cnn`), which parallel plans can train it, its tensor-parallel
plan, its FSDP units, its pipeline stages, and whether it is a sequence model. Callers
look a family up by its registry name (:func:`family`) or by one of its models
(:func:`family_of`).
"""

from __future__ import annotations

from torch import nn

from baton.errors import ModelError
from baton.ml.families.base import Family
from baton.ml.families.causal_lm import CausalLMFamily
from baton.ml.families.cnn import CNNFamily
from baton.ml.families.hf_causal_lm import HFCausalLMFamily
from baton.ml.families.logreg import LogRegFamily
from baton.ml.families.mlp import MLPFamily
from baton.ml.plans import PlanKind

__all__ = ["FAMILIES", "Family", "families_for", "family", "family_of", "known_families"]

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (MLPFamily(), LogRegFamily(), CausalLMFamily(), CNNFamily(), HFCausalLMFamily())
}
"""Every registered family by name, in registration order."""


def known_families() -> tuple[str, ...]:
    """Names of the registered families."""
    return tuple(FAMILIES)


def family(name: str) -> Family:
    """The family registered as ``name``.

    Raises:
        ModelError: No family has that name.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(FAMILIES)}") from None


def family_of(model: nn.Module) -> Family:
    """The family whose builder made ``model``.

    Raises:
        ModelError: ``model`` belongs to no registered family.
    """
    for candidate in FAMILIES.values():
        if type(model) is candidate.model_type:
            return candidate
    raise ModelError(f"a {type(model).__name__} belongs to no registered model family")


def families_for(kind: PlanKind) -> tuple[str, ...]:
    """Names of the families that plan ``kind`` can train, sorted."""
    return tuple(sorted(name for name, f in FAMILIES.items() if kind in f.plans))
