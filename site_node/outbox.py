"""A site's sealed outputs, kept (encrypted, private) until the hop after them is done.

A hop's sealed output leaves the site by upload, but the site keeps it until it knows the
next hop completed: if the coordinator's copy is lost, or the hop is delivered again after
a lost connection, the site hands on the same ciphertext without training again; if the
coordinator names another recipient (the next site was skipped or rerouted), the site
re-seals the model for it (:func:`reseal`). For that it also keeps a copy sealed to
itself, with its own keys: no plaintext model is ever kept at rest.

Layout, inside the run's private directory (0700; every file 0600)::

    <work_dir>/<run_id>/hop-00003.out/
        sealed      the output as sealed to the recipient (uploaded as is)
        own.sealed  the same model sealed to this site, for re-sealing (sealed while
                    the output uploads: an entry may lack it until then)
        entry.json  manifests (base64), recipient, digests, metrics

An entry goes when the run moves two hops on (:meth:`Outbox.release`), when the run's
final model reaches this site for evaluation (:meth:`Outbox.drop_run`), or when it is older
than the site's retention (:meth:`Outbox.sweep`): disk use is bounded.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from baton.domain import Assignment, NextHop
from baton.errors import PkiError, SealError
from baton.io import atomic_write
from baton.plan import parse_plan
from baton.security.audit import AuditLog
from baton.security.envelope import Expectation, open_file
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import (
    AppKeys,
    check_owner,
    manifest_digest,
    plan_hash,
    verify_plan,
)
from baton.security.tls import TlsMaterial
from site_node.handover import Verified, refuse_revoked, seal_for_next
from site_node.receive import MAX_MODEL_BYTES

logger = logging.getLogger(__name__)

REUSE_SECONDS = 12 * 3600
"""Oldest sealed output handed on again as is; an older one is re-sealed, so that it
reaches its recipient well before its manifest expires."""
_SUFFIX = ".out"


def recipient_key(nxt: NextHop) -> str:
    """A stable name for who a hop's output is sealed to (its certificates included)."""
    return hashlib.sha256(repr(nxt).encode()).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Sent:
    """A hop's output as this site sealed it, with what its CompleteHop reports."""

    run_id: str
    hop_index: int
    directory: Path
    recipient: str
    """:func:`recipient_key` of the party it is sealed to."""
    manifest: bytes
    """The signed manifest sealing ``sealed`` to the recipient."""
    own_manifest: bytes
    """The signed manifest sealing ``own.sealed`` to this site."""
    plan_digest: str
    schema_digest: str
    input_digest: str
    sealed_at: float
    """Unix time the output was sealed."""
    metrics_before: Mapping[str, float] = field(default_factory=dict)
    metrics_after: Mapping[str, float] = field(default_factory=dict)
    num_examples: int = 0
    train_seconds: float = 0.0
    completed: bool = False
    """The coordinator took this output (its CompleteHop succeeded): delivered again, it
    is re-sealed with a new key, since the coordinator's copy was lost or another party
    receives it."""

    def require_input_of(self, a: Assignment) -> None:
        """Refuses hop ``a``, this hop delivered again, when it comes under another plan
        or with another input than the kept output was trained on (an equivocating relay).

        Raises:
            SealError: ``equivocation``.
        """
        plan = plan_hash(a.plan_toml, a.plan_signature)
        # Hop 0's input is the plan, or a start model the plan pins (by its file's hash).
        previous = manifest_digest(a.input_manifest) if a.input_manifest and a.hop_index else plan
        if (plan, previous) != (self.plan_digest, self.input_digest):
            raise SealError(
                "equivocation",
                f"hop {a.hop_index + 1} delivered again with another plan or input than it was "
                "trained on",
                run_id=a.run_id,
                hop=a.hop_index,
            )

    @property
    def sealed(self) -> Path:
        """The ciphertext sealed to the recipient."""
        return self.directory / "sealed"

    @property
    def own_sealed(self) -> Path:
        """The ciphertext sealed to this site."""
        return self.directory / "own.sealed"


class Outbox:
    """The sealed outputs a site keeps, under its work directory.

    Constraints: an entry is complete or absent (``entry.json`` is written last,
    atomically); every file is private (0600) in private directories (0700).

    Args:
        work_dir: The site's private work directory.
    """

    def __init__(self, work_dir: Path) -> None:
        self._root = work_dir

    def path(self, run_id: str, hop_index: int) -> Path:
        """The directory of hop ``hop_index``'s entry (existing or not)."""
        return self._root / run_id / f"hop-{hop_index:05d}{_SUFFIX}"

    def put(self, sent: Sent) -> None:
        """Records ``sent``, whose ``sealed`` and ``own_sealed`` files are already in place."""
        meta = {
            "run_id": sent.run_id,
            "hop_index": sent.hop_index,
            "recipient": sent.recipient,
            "manifest": base64.b64encode(sent.manifest).decode("ascii"),
            "own_manifest": base64.b64encode(sent.own_manifest).decode("ascii"),
            "plan_digest": sent.plan_digest,
            "schema_digest": sent.schema_digest,
            "input_digest": sent.input_digest,
            "sealed_at": sent.sealed_at,
            "metrics_before": dict(sent.metrics_before),
            "metrics_after": dict(sent.metrics_after),
            "num_examples": sent.num_examples,
            "train_seconds": sent.train_seconds,
            "completed": sent.completed,
        }
        atomic_write(sent.directory / "entry.json", json.dumps(meta).encode(), mode=0o600)

    def get(self, run_id: str, hop_index: int) -> Sent | None:
        """Hop ``hop_index``'s entry, or None (also for an unreadable, partial one)."""
        directory = self.path(run_id, hop_index)
        try:
            meta = json.loads((directory / "entry.json").read_text())
            sent = Sent(
                run_id=meta["run_id"],
                hop_index=int(meta["hop_index"]),
                directory=directory,
                recipient=meta["recipient"],
                manifest=base64.b64decode(meta["manifest"]),
                own_manifest=base64.b64decode(meta["own_manifest"]),
                plan_digest=meta["plan_digest"],
                schema_digest=meta["schema_digest"],
                input_digest=meta["input_digest"],
                sealed_at=float(meta["sealed_at"]),
                metrics_before=meta["metrics_before"],
                metrics_after=meta["metrics_after"],
                num_examples=int(meta["num_examples"]),
                train_seconds=float(meta["train_seconds"]),
                completed=bool(meta.get("completed", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (sent.run_id, sent.hop_index) != (run_id, hop_index) or not sent.sealed.is_file():
            return None
        return sent

    def release(self, run_id: str, *, assigned_hop: int) -> int:
        """Drops the entries of ``run_id`` that can no longer be needed once hop
        ``assigned_hop`` is assigned here: its input is hop ``assigned_hop - 1``'s output,
        so every hop before that one has its next hop completed. Returns how many went."""
        gone = 0
        for hop in range(max(0, assigned_hop - 1)):
            directory = self.path(run_id, hop)
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
                gone += 1
        return gone

    def drop_run(self, run_id: str) -> int:
        """Drops every entry of a finished run; returns how many went."""
        return _remove(sorted((self._root / run_id).glob(f"hop-*{_SUFFIX}")))

    def sweep(self, *, older_than_s: float, now: float | None = None) -> int:
        """Drops entries last changed more than ``older_than_s`` ago, of any run (their run
        ended, or moved on, while this site was away); returns how many went."""
        limit = (time.time() if now is None else now) - older_than_s
        old = [d for d in self._root.glob(f"*/hop-*{_SUFFIX}") if _mtime(d) < limit]
        return _remove(old)


def reseal(
    sent: Sent,
    a: Assignment,
    dest: Path,
    *,
    tls: TlsMaterial,
    keys: AppKeys,
    revoked: Callable[[bytes | str], bool],
) -> bytes:
    """Seals the model kept in ``sent`` for the recipient ``a.next_hop`` names, into
    ``dest``; returns the new signed manifest. The plaintext exists only while this runs.

    ``a`` is hop ``sent.hop_index`` delivered again with another recipient; its signed
    plan must be the one the hop was trained under, and the recipient passes the same
    checks as at the first sealing (:func:`site_node.handover.seal_for_next`).

    Raises:
        PkiError: The plan is not the hop's, its signer or the recipient is not
            acceptable, or the assignment names no recipient.
        SealError: The kept copy cannot be opened (tampered with, or expired).
    """
    if a.next_hop is None or (a.run_id, a.hop_index) != (sent.run_id, sent.hop_index):
        raise PkiError(f"hop {a.hop_index + 1} of run {a.run_id}: nothing to re-seal it for")
    owner = check_owner(
        tls.ca_pem, a.owner_signing_certificate_pem, a.owner_encryption_certificate_pem
    )
    refuse_revoked(
        revoked,
        "the study owner",
        a.owner_signing_certificate_pem,
        a.owner_encryption_certificate_pem,
    )
    if verify_plan(a.plan_toml, a.plan_signature, owner) != sent.plan_digest:
        raise PkiError(f"hop {a.hop_index + 1} of run {a.run_id} was trained under another plan")
    checked = Verified(
        plan=parse_plan(a.plan_toml, source=f"plan of run {a.run_id}"),
        owner=owner,
        plan_digest=sent.plan_digest,
        schema_digest=sent.schema_digest,
        input_digest=sent.input_digest,
    )
    me = tls.identity.spiffe_id
    plain = sent.directory / "reseal.safetensors"
    try:
        open_file(
            sent.own_sealed,
            plain,
            sent.own_manifest,
            me=me,
            my_key=keys.encryption_key,
            expect=Expectation(
                run_id=sent.run_id,
                hop_index=sent.hop_index,
                sender=me,
                previous_manifest_hash=sent.input_digest,
                plan_hash=sent.plan_digest,
                schema_hash=sent.schema_digest,
                max_plaintext_bytes=MAX_MODEL_BYTES,
            ),
            sender_key=keys.signing_key.public_key(),
            replay=MemoryReplayGuard(),
        )
        return seal_for_next(
            a.next_hop, a, checked, plain, dest, tls=tls, keys=keys, revoked=revoked
        )
    finally:
        plain.unlink(missing_ok=True)


def hand_on_again(
    outbox: Outbox,
    kept: Sent,
    a: Assignment,
    nxt: NextHop,
    *,
    tls: TlsMaterial,
    keys: AppKeys,
    revoked: Callable[[bytes | str], bool],
    audit: AuditLog,
) -> Sent | None:
    """The kept output of hop ``a``, delivered again, ready to upload: as sealed before, or
    re-sealed (and audited) when ``a`` names another recipient, it was sealed long ago, or
    the coordinator took it before (its copy was lost: a new key gives a new blob). None
    (and the entry is dropped) when it must be re-sealed but its copy sealed to this site
    was never finished: the hop is then trained again.

    Raises:
        SealError: ``a`` comes with another plan or input than ``kept`` was trained on.
        PkiError: The new recipient is not acceptable (see :func:`reseal`).
    """
    kept.require_input_of(a)
    if (
        not kept.completed
        and kept.recipient == recipient_key(nxt)
        and time.time() - kept.sealed_at < REUSE_SECONDS
    ):
        logger.info("hop %d: handing on the output sealed before; not retrained", a.hop_index + 1)
        return kept
    if not kept.own_manifest:
        # The site stopped while the copy sealed to itself was still being sealed beside
        # the upload (see site_node.own_copy): only training again gives a model to seal.
        logger.warning(
            "hop %d: the kept output has no copy sealed to this site to re-seal from; "
            "training the hop again",
            a.hop_index + 1,
        )
        shutil.rmtree(kept.directory, ignore_errors=True)
        return None
    who = nxt.site_id or "owner"
    tmp = kept.directory / "sealed.new"
    manifest = reseal(kept, a, tmp, tls=tls, keys=keys, revoked=revoked)
    os.replace(tmp, kept.sealed)
    sent = dataclasses.replace(
        kept,
        recipient=recipient_key(nxt),
        manifest=manifest,
        sealed_at=time.time(),
        completed=False,
    )
    outbox.put(sent)
    audit.append(
        "hop_resealed",
        run_id=a.run_id,
        hop=a.hop_index,
        detail={"manifest": manifest_digest(manifest), "recipient": who},
    )
    logger.info("hop %d: re-sealed the kept output for %s", a.hop_index + 1, who)
    return sent


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _remove(directories: list[Path]) -> int:
    for d in directories:
        shutil.rmtree(d, ignore_errors=True)
    if directories:
        logger.info("removed %d kept sealed output(s) no longer needed", len(directories))
    return len(directories)
