"""The study owner's copy of one hop: a completed hop's stored output, of a run in any
state, opened with the owner's key where it was sealed to the owner (the last hop; every
hop when the plan asks for escrow): what a run that lost its sites restarts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baton.errors import ConfigError, ConflictError, SealError
from baton.plan import parse_plan
from baton.security.chain import ChainReport, verify_run_chain
from baton.security.envelope import Expectation
from baton.security.manifest import HopManifest
from baton.security.sealing import AppKeys, check_owner
from baton.v1 import admin_pb2, common_pb2
from owner.cli_verify import run_evidence
from owner.client import AdminClient
from owner.fetch import MAX_MODEL_BYTES, open_sealed, site_keys

ESCROW = "escrow"
"""The ``--hop`` value that picks the newest hop the owner can open."""

NO_ESCROW = "the plan does not ask for escrow (`[security] escrow_to_owner = true`)"
"""Why the owner cannot open a hop before the last one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedHop:
    """What :func:`fetch_hop` opened."""

    manifest: HopManifest
    """The hop's verified manifest."""
    site_id: str
    """The site that trained the hop."""
    total_hops: int
    """How many hops the run makes (or made)."""
    newest: bool
    """Whether the hop was picked as the newest the owner can open (``--hop escrow``)."""

    @property
    def number(self) -> int:
        """The hop's number as people count it, from 1."""
        return self.manifest.hop_index + 1


def parse_hop(value: str) -> int | None:
    """A ``--hop`` value: a hop number from 1, or ``escrow`` (None: the newest hop the
    owner can open).

    Raises:
        ConfigError: Anything else.
    """
    if value == ESCROW:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--hop takes a hop number from 1, or {ESCROW!r}; not {value!r}")
    return int(value)


def fetch_hop(
    client: AdminClient,
    run_id: str,
    number: int | None,
    dest: Path,
    *,
    owner: AppKeys,
    ca_pem: bytes,
) -> FetchedHop:
    """Downloads hop ``number``'s (from 1; None: the newest the owner can open) stored
    output of a run the owner signed, in any state, and opens it into ``dest`` as
    :func:`owner.fetch.fetch_result` opens a final model (the same checks of the sender
    and the blob, the same private directory and atomic rename).

    Before anything is downloaded, the chain of manifests from the owner's signed plan up
    to the hop verifies against the owner's pinned CA and keys (see
    :func:`baton.security.chain.verify_run_chain`; the hop's recipient is the next hop's
    site, or the owner for the run's last), and the hop's manifest wraps a key to the
    owner: a hop before the last only when the plan asks for escrow.

    Raises:
        ConfigError: The run has no such hop, or ``dest`` cannot be written.
        ConflictError: The hop has not completed, the owner cannot open it, or no hop the
            owner can open has completed.
        SealError: The chain does not verify (``broken_chain``), or the hop's model was
            rejected when opened.
        BlobError: The blob the coordinator sent is not the hop's (its copy is corrupt).
        PkiError: The owner's certificates do not verify against the pinned CA.
    """
    me = check_owner(ca_pem, owner.signing_cert_pem, owner.encryption_cert_pem).identity
    run = client.get_run(run_id)
    sites = {s.site_id: s for s in client.list_sites()}
    hops = {h.hop_index: h for h in run.hops}
    if number is None:
        report = _verified(run, sites, None, owner=owner, ca_pem=ca_pem)
        index = _newest_openable(run, report, me.spiffe_id)
    else:
        index = _completed(run, hops, number)
        report = _verified(run, sites, index, owner=owner, ca_pem=ca_pem)
        _check_openable(run, report.manifests[index], me.spiffe_id)
    manifest = report.manifests[index]
    hop = hops[index]
    sender = site_keys(ca_pem, sites, hop.site_id, federation=me.federation)
    opened = open_sealed(
        lambda sealed: client.fetch_sealed_hop(run_id, index, sealed),
        dest,
        hop,
        owner=owner,
        me=me.spiffe_id,
        expect=Expectation(
            run_id=run_id,
            hop_index=index,
            sender=manifest.sender,
            previous_manifest_hash=manifest.previous_manifest_hash,
            plan_hash=report.plan_hash,
            schema_hash=manifest.schema_hash,
            max_plaintext_bytes=MAX_MODEL_BYTES,
        ),
        sender_key=sender.signing_key,
    )
    return FetchedHop(
        manifest=opened, site_id=hop.site_id, total_hops=run.total_hops, newest=number is None
    )


def _completed(run: admin_pb2.Run, hops: dict[int, common_pb2.Hop], number: int) -> int:
    """The index of hop ``number``, checked to exist and to have completed."""
    if not 1 <= number <= run.total_hops:
        raise ConfigError(
            f"run {run.run_id} has hops 1 to {run.total_hops}; there is no hop {number}",
            run_id=run.run_id,
        )
    hop = hops.get(number - 1)
    if hop is None or not hop.output_manifest:
        state = common_pb2.HopState.Name(hop.state) if hop else "HOP_STATE_PENDING"
        raise ConflictError(
            f"hop {number} of run {run.run_id} has not completed yet: it is "
            f"{state.removeprefix('HOP_STATE_').lower()}",
            run_id=run.run_id,
            hop=number - 1,
        )
    return number - 1


def _verified(
    run: admin_pb2.Run,
    sites: dict[str, admin_pb2.Site],
    upto: int | None,
    *,
    owner: AppKeys,
    ca_pem: bytes,
) -> ChainReport:
    """The run's chain of completed hops, up to hop index ``upto`` (None: all), verified.

    A break after ``upto`` is no concern; with ``upto`` None, a break leaves the hops
    before it (each verified against the next) to choose from.

    Raises:
        SealError: The chain breaks at or before ``upto``, or at the plan.
    """
    evidence, following = run_evidence(run, sites, upto=upto)
    report = verify_run_chain(
        ca_pem=ca_pem,
        run_id=run.run_id,
        plan_toml=run.plan_toml,
        plan_signature=run.plan_signature,
        owner_signing_pem=owner.signing_cert_pem,
        owner_encryption_pem=owner.encryption_cert_pem,
        hops=evidence,
        next_site_id=following,
    )
    if not report.ok and (upto is not None or not report.manifests):
        raise SealError(
            "broken_chain",
            f"run {run.run_id}'s chain of hops does not verify: {report.describe()}",
            run_id=run.run_id,
        )
    return report


def _opens(manifest: HopManifest, me: str) -> bool:
    """Whether the hop's content key is wrapped to ``me`` (the owner's SPIFFE id)."""
    return any(k.recipient == me for k in manifest.wrapped_keys)


def _escrow(run: admin_pb2.Run) -> bool:
    """Whether the run's (verified) plan asks for escrow to the owner."""
    return parse_plan(run.plan_toml, source="run plan").security.escrow_to_owner


def _check_openable(run: admin_pb2.Run, manifest: HopManifest, me: str) -> None:
    """Refuses a hop whose content key is not wrapped to the owner ``me``, saying why."""
    if _opens(manifest, me):
        return
    why = NO_ESCROW if not _escrow(run) else "its manifest wraps no key to the owner"
    raise ConflictError(
        f"the owner cannot open hop {manifest.hop_index + 1} of run {run.run_id}: it is "
        f"sealed only to {manifest.recipient}, because {why}; only the run's last hop is "
        "always sealed to the owner",
        run_id=run.run_id,
        hop=manifest.hop_index,
    )


def _newest_openable(run: admin_pb2.Run, report: ChainReport, me: str) -> int:
    """The index of the newest verified hop the owner ``me`` can open."""
    for manifest in reversed(report.manifests):
        if _opens(manifest, me):
            return manifest.hop_index
    why = f"; {NO_ESCROW}" if not _escrow(run) else ""
    raise ConflictError(
        f"run {run.run_id} has no completed hop the owner can open{why}", run_id=run.run_id
    )
