"""Receiving a hop: check the signed plan and the sender, fetch the sealed model, open it.

The order of checks follows the hop protocol: the plan's signature and the sender's
certified keys first, then the envelope (verified before decrypted, decrypted before
parsed), then the weights against the model the plan names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from baton.domain import Assignment, BlobRef
from baton.errors import DataError, PkiError, SealError
from baton.ml.codec import load_metadata_file, load_state_file, schema_hash
from baton.ml.data import Schema, SiteData
from baton.ml.hooks import TaskHooks, task_hooks
from baton.ml.task import TABULAR, Task
from baton.ml.tasks import check_task_pin
from baton.plan import RunPlan, parse_plan
from baton.security.audit import AuditLog
from baton.security.envelope import Expectation, open_file
from baton.security.keys import PartyKeys
from baton.security.pki import Identity
from baton.security.replay import MemoryReplayGuard, ReplayGuard
from baton.security.sealing import (
    AppKeys,
    check_owner,
    check_party,
    expected_previous,
    manifest_digest,
    verify_plan,
)
from baton.security.streaming import Tail, read_while_written
from baton.security.tls import TlsMaterial
from site_node.client import CoordinatorClient
from site_node.handover import Verified, refuse_revoked
from site_node.start_model import START_HOP, StartGuard, check_start_hash, check_start_input

logger = logging.getLogger(__name__)

MAX_MODEL_BYTES = 64 << 30
"""Largest decrypted model a site accepts."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalData:
    """The site's own dataset, as read from its data directory, and the task that read it."""

    schema: Schema
    data: SiteData
    task: Task = TABULAR
    """The installed task the data belongs to; its hooks build, train and score the model."""
    site_dir: Path | None = None
    """The site's data directory (what the task keeps beside the data, e.g. a base model)."""

    @property
    def hooks(self) -> TaskHooks:
        """The task's model hooks, with Baton's defaults (:mod:`baton.ml.hooks`)."""
        return task_hooks(self.task)


@dataclass(frozen=True, kw_only=True, slots=True)
class Inbox:
    """What a site needs to accept a model: its identity, keys, data and memory of hops.

    Args:
        client: The site's port to the coordinator (downloads the sealed input).
        tls: The site's TLS material (its identity and pinned CA).
        keys: The site's application keys (signing, encryption).
        local: The site's dataset.
        replay: Remembers every hop this site accepted, across restarts.
        audit: This site's signed, hash-chained audit log.
        revoked: Whether a certificate (PEM) is on the federation's revocation list.
    """

    client: CoordinatorClient
    tls: TlsMaterial
    keys: AppKeys
    local: LocalData
    replay: ReplayGuard
    audit: AuditLog
    revoked: Callable[[bytes | str], bool]

    def receive(self, a: Assignment, run_dir: Path, plain_in: Path) -> tuple[nn.Module, Verified]:
        """Checks ``a``'s plan and sender and returns the model to train, with what was checked.

        The model is built from the plan (hop 0), or loaded from the sealed input after it
        was downloaded to ``run_dir``, verified and opened to ``plain_in`` (at hop 0, the
        start model the plan pins, sealed by its owner: :mod:`site_node.start_model`).

        Raises:
            PkiError: The plan is unsigned or wrongly signed, its signer is no study owner,
                this site is not in it, or the sender's certificates do not verify or are
                revoked.
            DataError: The plan trains another task than this site's data.
            ConfigError: The plan pins the task's code and this site's installed task
                differs (the message names both pins); nothing was downloaded.
            SealError: The sealed input was rejected (``reason`` says which check).
            ModelError: The opened weights do not fit the plan's model.
        """
        owner, plan_digest, plan = self._plan(a)
        schema = self.local.schema
        if plan.task.dataset != schema.task:
            raise DataError(
                f"run {a.run_id} trains task {plan.task.dataset!r}, "
                f"but this site holds {schema.task!r}"
            )
        me = self.tls.identity
        if me.name not in plan.run.sites:
            raise PkiError(f"the signed plan of run {a.run_id} does not list this site")
        check_task_pin(plan.task, pinned_by=f"run {a.run_id}", here="this site")
        hooks = self.local.hooks
        model = hooks.build_model(plan, schema, self.local.site_dir)
        schema_digest = schema_hash(hooks.travelling_state(model))
        input_digest = plan_digest
        start = a.hop_index == 0 and check_start_input(a, plan)
        if a.input is None:
            if a.hop_index != 0:
                raise SealError("wrong_context", f"hop {a.hop_index} arrived without a model")
            logger.info("hop 0: building the initial %s model from the plan", plan.model.name)
        else:
            sender = owner if start else self._sender(a)
            digest = self._open(
                a,
                a.input,
                run_dir / f"hop-{a.hop_index:05d}.in.sealed",
                plain_in,
                model,
                plan=plan,
                sender=sender,
                expect=Expectation(
                    run_id=a.run_id,
                    hop_index=START_HOP if start else a.hop_index - 1,
                    sender=sender.identity.spiffe_id,
                    previous_manifest_hash=expected_previous(plan_digest, a.previous_manifest),
                    plan_hash=plan_digest,
                    schema_hash=schema_digest,
                    max_plaintext_bytes=MAX_MODEL_BYTES,
                ),
            )
            # Hop 0's output names the plan as its predecessor even from a start model:
            # the plan's pin binds that model to the run (see site_node.start_model).
            input_digest = plan_digest if start else digest
        checked = Verified(
            plan=plan,
            owner=owner,
            plan_digest=plan_digest,
            schema_digest=schema_digest,
            input_digest=input_digest,
        )
        return model, checked

    def _plan(self, a: Assignment) -> tuple[PartyKeys, str, RunPlan]:
        """The study owner's verified keys, the plan's digest and the parsed plan."""
        ca = self.tls.ca_pem
        owner = check_owner(ca, a.owner_signing_certificate_pem, a.owner_encryption_certificate_pem)
        refuse_revoked(
            self.revoked,
            "the study owner",
            a.owner_signing_certificate_pem,
            a.owner_encryption_certificate_pem,
        )
        plan_digest = verify_plan(a.plan_toml, a.plan_signature, owner)
        self.audit.append(
            "plan_accepted",
            run_id=a.run_id,
            hop=a.hop_index,
            detail={"plan": plan_digest, "owner": owner.identity.spiffe_id},
        )
        return owner, plan_digest, parse_plan(a.plan_toml, source=f"plan of run {a.run_id}")

    def _sender(self, a: Assignment) -> PartyKeys:
        """The previous site's certified keys, checked against the pinned CA and revocation."""
        me = self.tls.identity
        sender = check_party(
            self.tls.ca_pem,
            a.sender_signing_certificate_pem,
            a.sender_encryption_certificate_pem,
            Identity(federation=me.federation, kind="site", name=a.previous_site_id),
        )
        refuse_revoked(
            self.revoked,
            f"site {a.previous_site_id}",
            a.sender_signing_certificate_pem,
            a.sender_encryption_certificate_pem,
        )
        return sender

    def _open(
        self,
        a: Assignment,
        incoming: BlobRef,
        sealed: Path,
        plain_in: Path,
        model: nn.Module,
        *,
        plan: RunPlan,
        sender: PartyKeys,
        expect: Expectation,
    ) -> str:
        """Downloads and opens the sealed input ``expect`` describes, from ``sender`` (the
        previous site, or the study owner for a start model), and loads it into ``model``;
        returns the digest of the input's manifest."""
        me = self.tls.identity
        start = a.hop_index == 0
        guard: ReplayGuard = StartGuard(self.replay) if start else self.replay
        # Retrying this very hop (after a lost connection or a restart) presents the
        # input this site already accepted for it: open it again. Any other manifest
        # for that hop (equivocation) or an older hop (rollback) is still refused.
        retry = (
            guard.check(a.run_id, expect.hop_index, manifest_digest(a.input_manifest)) == "replay"
        )
        if retry:
            logger.info("hop %d: resuming; its input was accepted before", a.hop_index)
        replay = MemoryReplayGuard() if retry else guard
        with Tail(sealed, incoming.size, sha256=incoming.blob_id) as tail:
            manifest = read_while_written(
                tail,
                lambda t: self._fetch(a, incoming, t),
                lambda t: open_file(
                    t,
                    plain_in,
                    a.input_manifest,
                    me=me.spiffe_id,
                    my_key=self.keys.encryption_key,
                    expect=expect,
                    sender_key=sender.signing_key,
                    replay=replay,
                ),
            )
        if start:
            check_start_hash(a, plan, plain_in)
        self._check_data_schema(a, plain_in)
        self.local.hooks.load_travelling(
            model, load_state_file(plain_in), max_norm=plan.security.max_weight_norm
        )
        self.audit.append(
            "hop_resumed" if retry else "hop_received",
            run_id=a.run_id,
            hop=a.hop_index,
            detail={"manifest": manifest.digest, "sender": manifest.sender},
        )
        logger.info("hop %d: opened the model sealed by %s", a.hop_index, manifest.sender)
        return manifest.digest

    def _fetch(self, a: Assignment, incoming: BlobRef, tail: Tail) -> None:
        """Downloads ``incoming`` to ``tail``'s file, reporting its growth to ``tail``.

        The sealed blob is opened (verified, then decrypted into a private temporary file)
        while it arrives; its plaintext is used only after the whole blob's hash matched.
        """
        self.client.download(
            run_id=a.run_id,
            hop_index=a.hop_index,
            blob=incoming,
            dest=tail.path,
            progress=tail.grew,
        )

    def _check_data_schema(self, a: Assignment, plain_in: Path) -> None:
        """Refuses a model trained on another data schema than this site's (columns in
        another order, other classes): its weights would meet misaligned inputs. A model
        whose metadata names no schema is taken as it is."""
        theirs = load_metadata_file(plain_in).get("baton.schema")
        if theirs is None:
            return
        source = f"the schema of the model from {a.previous_site_id}"
        theirs_hash = Schema.from_json(theirs, source=source).schema_hash()
        mine = self.local.schema.schema_hash()
        if theirs_hash != mine:
            raise DataError(
                f"hop {a.hop_index} of run {a.run_id}: the incoming model was trained on data "
                f"schema {theirs_hash[:12]} (at {a.previous_site_id}), this site holds "
                f"{mine[:12]}: the sites' feature columns or classes differ",
                run_id=a.run_id,
                hop=a.hop_index,
            )
