"""A run's signed plan as the coordinator checks it before the run exists: the study
owner's certificates (certified by the federation CA, not revoked), the signature over the
plan's exact text, the plan's names and strategy options, and its start model when it
pins one (:mod:`coordinator.engine.start_model`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from baton.errors import PkiError
from baton.plan import RunPlan, check_names, parse_plan
from baton.security.keys import PartyKeys
from baton.security.sealing import check_owner, verify_plan
from coordinator.engine.start_model import StartModel, check_start_model
from ordering import known_strategies, make_strategy


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedPlan:
    """The study owner's signature over a plan, with the owner's certificates."""

    signature: bytes
    owner_signing_pem: str
    owner_encryption_pem: str


def check_signed_plan(
    plan_toml: str,
    signed: SignedPlan,
    start: StartModel | None,
    *,
    ca_pem: bytes,
    revoked: Callable[[bytes], bool],
    stored: Callable[[str], bool],
) -> tuple[RunPlan, PartyKeys, str]:
    """The parsed plan, the owner's verified keys and the signed plan's digest.

    Raises:
        ConfigError: the plan is invalid, or its start model is missing, unpinned or does
            not fit the run (see :func:`check_start_model`; ``stored`` says whether the
            blob store holds a blob).
        PkiError: the owner's certificates are revoked, or they or the plan's signature
            do not verify.
        SealError: the start model's manifest is not signed by the owner.
    """
    if any(
        pem and revoked(pem.encode())
        for pem in (signed.owner_signing_pem, signed.owner_encryption_pem)
    ):
        raise PkiError("the plan came with a revoked owner certificate")
    plan = parse_plan(plan_toml, source="run plan")
    check_names(plan, source="run plan", strategies=known_strategies())
    make_strategy(plan.ordering.strategy, plan.ordering.options)  # options, too
    owner = check_owner(ca_pem, signed.owner_signing_pem, signed.owner_encryption_pem)
    digest = verify_plan(plan_toml, signed.signature, owner)
    check_start_model(plan, start, owner=owner, plan_digest=digest, stored=stored)
    return plan, owner, digest
