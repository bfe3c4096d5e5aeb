"""Offline verification of a run's manifest chain, from public material only.

Anyone holding the federation CA certificate can check, after the fact, that a run's
hops form one unbroken chain rooted in the study owner's signed plan: each hop was sealed
by the certified site the run says, for this run and hop, names the digest of the hop
before it (hop 0: the signed plan's hash), describes exactly the blob the coordinator
stored, and was sealed to the next hop's site (the last hop: to the owner). Nothing here
opens a blob; what the chain cannot show is whether the model inside is any good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from baton.errors import BatonError
from baton.security.identity import Identity
from baton.security.keys import PartyKeys, fingerprint
from baton.security.manifest import HopManifest, verify_manifest
from baton.security.pki import federation_of_ca
from baton.security.sealing import check_owner, check_party, verify_plan


@dataclass(frozen=True, kw_only=True, slots=True)
class HopEvidence:
    """What the coordinator holds about one completed hop."""

    hop_index: int
    """The hop's position in the run, from 0."""
    site_id: str
    """The site that trained it (the name in its SPIFFE id)."""
    blob_id: str
    """Hex SHA-256 of the output blob, its content address."""
    blob_size: int
    """Length of the output blob in bytes."""
    manifest: bytes = field(repr=False)
    """The SignedManifest that seals the output blob."""
    signing_cert_pem: str | bytes = field(repr=False)
    """The site's signing certificate (PEM)."""
    encryption_cert_pem: str | bytes = field(repr=False)
    """The site's encryption certificate (PEM)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChainReport:
    """What :func:`verify_run_chain` found."""

    hops_verified: int
    """Hops that passed every check, from hop 0."""
    broken_hop: int | None = None
    """The hop at the first break, or None (intact, or broken before any hop)."""
    reason: str | None = None
    """Why the chain breaks there; None if it is intact."""
    plan_hash: str = ""
    """The signed plan's hash, once the plan verified."""
    manifests: tuple[HopManifest, ...] = ()
    """The verified manifests, in hop order."""

    @property
    def ok(self) -> bool:
        """Whether every hop given verified."""
        return self.reason is None

    def describe(self) -> str:
        """One line: the break with its place, or how many hops verified."""
        if self.reason is None:
            return f"{self.hops_verified} hops verified"
        where = "plan" if self.broken_hop is None else f"hop {self.broken_hop}"
        return f"{where}: {self.reason}"


class _Break(Exception):
    """The chain breaks at ``hop`` (None: before any hop) because of ``reason``."""

    def __init__(self, hop: int | None, reason: str) -> None:
        super().__init__(reason)
        self.hop = hop
        self.reason = reason


def verify_run_chain(
    *,
    ca_pem: bytes,
    run_id: str,
    plan_toml: str,
    plan_signature: bytes,
    owner_signing_pem: str | bytes,
    owner_encryption_pem: str | bytes,
    hops: Sequence[HopEvidence],
    next_site_id: str | None = None,
) -> ChainReport:
    """Checks a run's hops, in order, against the CA, the signed plan and each other.

    Order: the owner's certificates (an admin of the CA's federation), the plan's
    signature by the owner; then per hop: its index (no gap), the site's certificates,
    the manifest's signature by that site, run, hop and sender, the previous-manifest hash
    (the plan hash for hop 0, else the previous manifest's digest), the plan hash, the
    schema (the same as hop 0's), the blob's hash and size, and the recipient (the next
    hop's site, the ``next_site_id`` for the last hop given, or the owner) with its
    certified encryption key.

    Args:
        ca_pem: The federation CA certificate the checker pins.
        run_id: The run.
        plan_toml: The run plan's exact text.
        plan_signature: The owner's signature over it.
        owner_signing_pem: The study owner's signing certificate.
        owner_encryption_pem: The study owner's encryption certificate.
        hops: The completed hops, from hop 0.
        next_site_id: The site the last hop given must be sealed to, for a run still in
            progress; None for a finished run, whose last hop is sealed to the owner.

    Returns:
        The report: how many hops verified and the first break. Bad evidence never
        raises; it is the break.
    """
    verified: list[HopManifest] = []
    plan_digest = ""
    try:
        try:
            federation = federation_of_ca(ca_pem)
            owner = check_owner(ca_pem, owner_signing_pem, owner_encryption_pem)
        except BatonError as exc:
            raise _Break(None, f"owner certificates: {exc.message}") from None
        try:
            plan_digest = verify_plan(plan_toml, plan_signature, owner)
        except BatonError as exc:
            raise _Break(None, exc.message) from None
        except ValueError:  # text that is not UTF-8 encodable
            raise _Break(None, "the run plan is not valid text") from None
        parties = [_party(ca_pem, federation, hop) for hop in hops]
        for i, hop in enumerate(hops):
            if hop.hop_index != i:
                raise _Break(
                    i,
                    f"hop {i} is missing (the next evidence is hop {hop.hop_index})"
                    if hop.hop_index > i
                    else f"hop {hop.hop_index} is repeated or out of order",
                )
            keys = parties[i]
            if isinstance(keys, str):
                raise _Break(i, f"site certificates: {keys}")
            try:
                m = verify_manifest(hop.manifest, sender_key=keys.signing_key)
            except BatonError as exc:
                raise _Break(i, f"manifest rejected: {exc.message}") from None
            recipient: tuple[str, PartyKeys | str] | None = None  # hop i + 1 breaks first
            if i + 1 < len(hops):
                if hops[i + 1].hop_index == i + 1:
                    recipient = (_site_id(federation, hops[i + 1].site_id), parties[i + 1])
            elif next_site_id is not None:
                recipient = (_site_id(federation, next_site_id), "not given")
            else:
                recipient = (owner.identity.spiffe_id, owner)
            problem = _hop_problem(
                m,
                hop,
                run_id=run_id,
                sender=keys.identity.spiffe_id,
                previous=verified[-1].digest if verified else plan_digest,
                plan_digest=plan_digest,
                first=verified[0] if verified else None,
                recipient=recipient,
            )
            if problem is not None:
                raise _Break(i, problem)
            verified.append(m)
    except _Break as brk:
        return ChainReport(
            hops_verified=len(verified),
            broken_hop=brk.hop,
            reason=brk.reason,
            plan_hash=plan_digest,
            manifests=tuple(verified),
        )
    return ChainReport(
        hops_verified=len(verified), plan_hash=plan_digest, manifests=tuple(verified)
    )


def _hop_problem(
    m: HopManifest,
    hop: HopEvidence,
    *,
    run_id: str,
    sender: str,
    previous: str,
    plan_digest: str,
    first: HopManifest | None,
    recipient: tuple[str, PartyKeys | str] | None,
) -> str | None:
    """Says how a verified manifest fails to fit its place in the chain, or None."""
    if m.run_id != run_id:
        return f"the manifest is for run {m.run_id!r}, not {run_id!r}"
    if m.hop_index != hop.hop_index:
        return f"the manifest is for hop {m.hop_index}"
    if m.sender != sender:
        return f"the manifest names sender {m.sender}, not {sender}"
    if m.previous_manifest_hash != previous:
        if first is None:
            return "the previous-manifest hash is not the signed plan's hash"
        return f"the previous-manifest hash is not the digest of hop {hop.hop_index - 1}'s manifest"
    if m.plan_hash != plan_digest:
        return "the plan hash is not the signed plan's hash"
    if first is not None and m.schema_hash != first.schema_hash:
        return "the model schema differs from hop 0's"
    if m.ciphertext_sha256 != hop.blob_id:
        return f"the manifest's ciphertext hash does not match blob {hop.blob_id[:16]}"
    if m.ciphertext_length != hop.blob_size:
        return (
            f"the manifest's ciphertext length {m.ciphertext_length} != blob size {hop.blob_size}"
        )
    if recipient is None:
        return None
    expected, keys = recipient
    if m.recipient != expected:
        return f"sealed to {m.recipient}, not {expected}"
    wrapped = {k.recipient: k.key_fingerprint for k in m.wrapped_keys}
    if not isinstance(keys, str) and wrapped[expected] != fingerprint(keys.encryption_key):
        return f"the key wrapped to {expected} is not its certified encryption key"
    return None


def _site_id(federation: str, site_id: str) -> str:
    """The SPIFFE id of a site; an invalid name gives an id no manifest can match."""
    try:
        return Identity(federation=federation, kind="site", name=site_id).spiffe_id
    except BatonError:
        return f"<invalid site id {site_id[:64]!r}>"


def _party(ca_pem: bytes, federation: str, hop: HopEvidence) -> PartyKeys | str:
    """A hop's site keys checked against the CA, or why they do not verify."""
    try:
        expected = Identity(federation=federation, kind="site", name=hop.site_id)
        return check_party(ca_pem, hop.signing_cert_pem, hop.encryption_cert_pem, expected)
    except BatonError as exc:
        return exc.message
