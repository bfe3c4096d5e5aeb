"""Handing a trained model on: seal it to the party the assignment names next, after checking
that party against the site's own pinned CA and the signed plan.

The next party (``Assignment.next_hop``, planned by the coordinator when it assigned the
hop) is a site the plan lists, or the study owner who signed the plan after the last hop;
the owner too when the plan asks for escrow; and, after the last hop, every site the plan
lists when it asks them to evaluate the final model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from baton.domain import Assignment, NextHop
from baton.errors import BatonError, PkiError
from baton.plan import RunPlan
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.keys import PartyKeys
from baton.security.pki import Identity
from baton.security.sealing import AppKeys, check_party
from baton.security.tls import TlsMaterial


@dataclass(frozen=True, kw_only=True, slots=True)
class Verified:
    """What the checks before training established."""

    plan: RunPlan
    owner: PartyKeys
    plan_digest: str
    schema_digest: str
    input_digest: str
    """Digest of the manifest that sealed the incoming model (the plan's for hop 0)."""


def refuse_revoked(revoked: Callable[[bytes | str], bool], who: str, *pems: str) -> None:
    """Raises PkiError if any of ``who``'s certificates is on the revocation list."""
    if any(revoked(pem) for pem in pems):
        raise PkiError(f"a certificate of {who} is revoked")


def recipient_of(a: Assignment) -> NextHop:
    """Who receives hop ``a``'s output, as the coordinator planned it with the assignment.

    Raises:
        BatonError: The assignment names no recipient; nothing was fetched or trained.
    """
    if a.next_hop is None:
        raise BatonError(
            f"hop {a.hop_index} of run {a.run_id} names no recipient (next_hop): "
            "the coordinator must plan it with the assignment",
            run_id=a.run_id,
            hop=a.hop_index,
        )
    return a.next_hop


def seal_for_next(
    nxt: NextHop,
    a: Assignment,
    checked: Verified,
    plain: Path,
    sealed: Path,
    *,
    tls: TlsMaterial,
    keys: AppKeys,
    revoked: Callable[[bytes | str], bool],
) -> bytes:
    """Seals ``plain`` into ``sealed`` for ``nxt``, hop ``a``'s recipient; returns the signed
    manifest.

    Raises:
        PkiError: The coordinator named a party the signed plan does not allow, or one
            whose certificates do not verify or are revoked.
    """
    me = tls.identity
    if nxt.final:
        recipient = checked.owner.identity
        if nxt.signing_certificate_pem != a.owner_signing_certificate_pem:
            raise PkiError("the coordinator named a final recipient other than the plan's signer")
    else:
        if nxt.site_id not in checked.plan.run.sites:
            raise PkiError(
                f"coordinator named {nxt.site_id!r} as next, but the plan does not list it"
            )
        recipient = Identity(federation=me.federation, kind="site", name=nxt.site_id)
    party = check_party(
        tls.ca_pem, nxt.signing_certificate_pem, nxt.encryption_certificate_pem, recipient
    )
    refuse_revoked(
        revoked, recipient.spiffe_id, nxt.signing_certificate_pem, nxt.encryption_certificate_pem
    )
    return seal_file(
        plain,
        sealed,
        ctx=HopContext(
            run_id=a.run_id,
            hop_index=a.hop_index,
            sender=me.spiffe_id,
            recipient=recipient.spiffe_id,
            previous_manifest_hash=checked.input_digest,
            plan_hash=checked.plan_digest,
            schema_hash=checked.schema_digest,
        ),
        sender_key=keys.signing_key,
        recipients=[
            *_recipients(checked, recipient, party.encryption_key),
            *_evaluators(checked, nxt, tls=tls, revoked=revoked),
        ],
    )


def _recipients(
    checked: Verified, recipient: Identity, key: x25519.X25519PublicKey
) -> list[RecipientKey]:
    """The next party, and the study owner too when the plan asks for escrow."""
    out = [RecipientKey(spiffe_id=recipient.spiffe_id, public_key=key)]
    owner = checked.owner
    if checked.plan.security.escrow_to_owner and owner.identity != recipient:
        out.append(
            RecipientKey(spiffe_id=owner.identity.spiffe_id, public_key=owner.encryption_key)
        )
    return out


def _evaluators(
    checked: Verified,
    nxt: NextHop,
    *,
    tls: TlsMaterial,
    revoked: Callable[[bytes | str], bool],
) -> list[RecipientKey]:
    """The sites the final model is sealed to as well, so that they evaluate it: only when
    the signed plan asks for it, only sites it lists, each certified by this site's own
    pinned CA and not revoked."""
    if not nxt.evaluators:
        return []
    plan = checked.plan
    if not (nxt.final and plan.run.evaluate_at_sites):
        raise PkiError("the coordinator named evaluators, but the signed plan asks for none")
    names = [e.site_id for e in nxt.evaluators]
    if len(set(names)) != len(names) or not set(names) <= set(plan.run.sites):
        raise PkiError("the coordinator named evaluators the signed plan does not list")
    out = []
    for e in nxt.evaluators:
        who = Identity(federation=tls.identity.federation, kind="site", name=e.site_id)
        party = check_party(
            tls.ca_pem, e.signing_certificate_pem, e.encryption_certificate_pem, who
        )
        refuse_revoked(
            revoked, who.spiffe_id, e.signing_certificate_pem, e.encryption_certificate_pem
        )
        out.append(RecipientKey(spiffe_id=who.spiffe_id, public_key=party.encryption_key))
    return out
