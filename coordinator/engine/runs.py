"""The run and hop state machine: creates runs, assigns hops one after another, records
their outcomes, and ends runs.

Every method is a short critical section over the store; nothing here waits on a site.
Sites learn of their hops through the journal's change counter (the assignment streams),
so a slow or absent site delays only its own run, never the coordinator.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from baton.domain import BlobRef
from baton.errors import (
    BatonError,
    ConfigError,
    ConflictError,
    Denied,
    NotFoundError,
    StoreError,
)
from baton.security.audit import AuditLog
from baton.security.sealing import manifest_digest
from coordinator.blobs import BlobStore
from coordinator.engine.assignments import Assignments
from coordinator.engine.clocks import HopClocks, Phase
from coordinator.engine.copies import copy_problem
from coordinator.engine.cutthrough import CutThrough
from coordinator.engine.evaluations import Evaluations
from coordinator.engine.faults import Fault
from coordinator.engine.journal import Journal, now_ms
from coordinator.engine.planning import check_probe_runs, plan_cycle, plan_through
from coordinator.engine.recovery import Recovery
from coordinator.engine.schemas import check_site_data
from coordinator.engine.signed_plans import SignedPlan as SignedPlan
from coordinator.engine.signed_plans import check_signed_plan
from coordinator.engine.start_model import StartModel
from coordinator.store.base import EventKind, HopRecord, HopState, RunRecord, RunState, Store

logger = logging.getLogger(__name__)


class Scheduler:
    """Owns every state transition of runs and hops.

    Args:
        store: Durable state.
        blobs: The blob store, to check that uploaded outputs exist.
        ca_pem: The federation CA, to check the study owner's certificates.
        revoked: Whether a certificate (PEM) is revoked; its holder never owns a new run
            and is never named as a hop's recipient.
        audit: The coordinator's signed audit log (None only in unit tests).
        clock: Source of Unix milliseconds (tests inject a fake).
        lease_seconds: A site heard from longer ago is offline (fault policies).
        cut_through: Whether a hop's site may start while the hop before uploads.
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        *,
        ca_pem: bytes,
        revoked: Callable[[bytes], bool] = lambda cert_pem: False,
        audit: AuditLog | None = None,
        clock: Callable[[], int] = now_ms,
        lease_seconds: float = 15.0,
        cut_through: bool = False,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._ca_pem = ca_pem
        self._revoked = revoked
        self.journal = Journal(store, audit=audit, clock=clock)
        self.evaluations = Evaluations(store, self.journal)
        self.cut_through = CutThrough(store, self.journal, enabled=cut_through)
        self.assignments = Assignments(store, self.evaluations, revoked=revoked)
        self.assignments.early = self.cut_through
        self.clocks = HopClocks(self.journal)
        self.recovery = Recovery(
            store,
            self.journal,
            self.assignments,
            self.clocks,
            lease_seconds=lease_seconds,
            revoked=revoked,
            advance=self._advance,
            blobs=blobs,
        )

    # -- runs -------------------------------------------------------------------------

    def create_run(
        self, plan_toml: str, signed: SignedPlan, start: StartModel | None = None
    ) -> RunRecord:
        """Validates a plan, records the run (with its stored ``start`` model exactly when
        the plan pins one: :mod:`coordinator.engine.start_model`), plans and assigns hop 0.

        Raises:
            ConfigError: the plan is invalid, names a site that never registered, or names
                sites whose published data does not fit it (no schema yet, another task,
                or schemas that disagree).
            PkiError: the owner's certificates are revoked, or they or the plan's signature
                do not verify.
        """
        plan, owner, digest = check_signed_plan(
            plan_toml,
            signed,
            start,
            ca_pem=self._ca_pem,
            revoked=self._revoked,
            stored=self._blobs.exists,
        )
        profiles = {s.site_id: s.profile for s in self._store.list_sites()}
        missing = [s for s in plan.run.sites if s not in profiles]
        if missing:
            raise ConfigError(f"run plan names sites that never registered: {', '.join(missing)}")
        check_site_data(plan, profiles)
        check_probe_runs(self._store, plan)
        offline = [s for s in plan.run.sites if not self.recovery.alive(s)]
        if offline and plan.faults.require_online:
            raise ConfigError(
                f"run plan names sites that are offline or revoked: {', '.join(offline)} "
                "([faults] require_online)"
            )
        run = RunRecord(
            run_id=start.run_id if start else uuid.uuid4().hex,
            name=plan.run.name,
            plan_toml=plan_toml,
            sites=plan.run.sites,
            cycles=plan.run.cycles,
            strategy=plan.ordering.strategy,
            total_hops=plan.total_hops,
            created_ms=self.journal.clock(),
            plan_signature=signed.signature,
            owner_signing_certificate_pem=signed.owner_signing_pem,
            owner_encryption_certificate_pem=signed.owner_encryption_pem,
            start_model=start.blob if start else None,
            start_manifest=start.manifest if start else b"",
        )
        with self.journal.transaction():
            self._store.create_run(run)
            self.journal.event(
                run.run_id, EventKind.RUN_CREATED, message=f"run {run.name!r} created"
            )
            if offline:
                warning = f"warning: sites offline or revoked at creation: {', '.join(offline)}"
                self.journal.event(run.run_id, EventKind.FAULT, message=warning)
                logger.warning("run %s: %s", run.run_id, warning)
            self.journal.record(
                "run_created",
                run.run_id,
                detail={"plan": digest, "owner": owner.identity.spiffe_id},
            )
            plan_cycle(self._store, run, plan, 0)
            self._advance(run.run_id)
        logger.info("run %s created: %d sites, %d hops", run.run_id, len(run.sites), run.total_hops)
        return self._store.get_run(run.run_id)

    def cancel_run(self, run_id: str, reason: str) -> RunRecord:
        """Stops a running run; its open hops fail."""
        with self.journal.transaction():
            run = self._store.get_run(run_id)
            if run.state is not RunState.RUNNING:
                raise ConflictError(f"run {run_id} already {run.state.value}", run_id=run_id)
            for hop in self._store.list_hops(run_id):
                if hop.state in (HopState.PENDING, HopState.ASSIGNED):
                    self._store.fail_hop(run_id, hop.hop_index, error="run cancelled")
            message = reason or "cancelled by an administrator"
            run = self._store.update_run(run_id, state=RunState.CANCELLED, error=message)
            self.journal.event(run_id, EventKind.RUN_CANCELLED, message=message)
            self.journal.record("run_cancelled", run_id)
        return run

    def recover(self) -> None:
        """Re-drives every running run after a restart, and writes the audit entries a
        crash kept from the log. A run that cannot go on (a failed hop, a plan this
        coordinator cannot plan) fails with the reason, so one run never keeps the
        coordinator from starting.

        Raises:
            StoreError: the state store itself fails (nothing could be served).
        """
        self.journal.flush_audit()
        self.evaluations.prime()
        for run in self._store.list_runs():
            if run.state is not RunState.RUNNING:
                continue
            try:
                with self.journal.transaction():
                    self._resume(run.run_id)
            except StoreError:
                raise
            except BatonError as exc:
                logger.error("run %s cannot resume: %s", run.run_id, exc.message)
                with self.journal.transaction():
                    self._end_failed(run.run_id, f"cannot resume after a restart: {exc.message}")
                    self.journal.record("run_failed", run.run_id, detail={"why": "unresumable"})
        self.journal.bump()

    # -- hops, as the assigned site drives them ---------------------------------------

    def hop_for_site(
        self, site_id: str, run_id: str, hop_index: int, *, early: bool = False
    ) -> HopRecord:
        """Returns an ASSIGNED hop of a running run, if ``site_id`` is the one assigned
        (with ``early``, also one it may start early: :meth:`CutThrough.early`).

        Raises:
            NotFoundError: no such run or hop.
            Denied: the hop belongs to another site.
            ConflictError: the hop or run is not in progress.
        """
        started = self.cut_through.early(run_id, hop_index, site_id) if early else None
        if started is not None:
            return started.hop
        run = self._store.get_run(run_id)
        hop = self._store.get_hop(run_id, hop_index)
        if hop.site_id != site_id:
            raise Denied(f"hop {hop_index + 1} of run {run_id} is not assigned to {site_id}")
        if run.state is not RunState.RUNNING:
            raise ConflictError(f"run {run_id} is {run.state.value}", run_id=run_id)
        if hop.state is not HopState.ASSIGNED:
            raise ConflictError(
                f"hop {hop_index + 1} is {hop.state.value}", run_id=run_id, hop=hop_index
            )
        return hop

    def progress(
        self, site_id: str, run_id: str, hop_index: int, stage: str, metrics: dict[str, float]
    ) -> None:
        """Records interim metrics of a hop in progress as an event (a sign of life)."""
        with self.journal.transaction():
            self.hop_for_site(site_id, run_id, hop_index, early=True)
            self.clocks.touch(run_id, hop_index, site_id, Phase.TRAINING)
            self.journal.event(
                run_id,
                EventKind.HOP_PROGRESS,
                hop_index=hop_index,
                site_id=site_id,
                message=stage,
                metrics=metrics,
            )

    def complete_hop(
        self,
        site_id: str,
        run_id: str,
        hop_index: int,
        *,
        output: BlobRef,
        metrics_before: dict[str, float],
        metrics_after: dict[str, float],
        num_examples: int,
        train_seconds: float,
        output_manifest: bytes,
    ) -> None:
        """Records a finished hop and hands the model to the next hop (or ends the run).

        The caller has verified ``output_manifest`` (signature, context, blob hash).

        Raises:
            NotFoundError: the output blob was never uploaded (or its size differs).
        """
        with self.journal.transaction():
            self.hop_for_site(site_id, run_id, hop_index)
            if (
                not self._blobs.exists(output.blob_id)
                or self._blobs.size(output.blob_id) != output.size
            ):
                raise NotFoundError(
                    f"output blob {output.blob_id} was not uploaded", run_id=run_id, hop=hop_index
                )
            self._store.complete_hop(
                run_id,
                hop_index,
                output=output,
                metrics_before=metrics_before,
                metrics_after=metrics_after,
                num_examples=num_examples,
                train_seconds=train_seconds,
                output_manifest=output_manifest,
            )
            if self.cut_through.announced(run_id, hop_index) not in (None, output):
                self.assignments.reoffer(run_id, hop_index + 1)  # it started on another
            self.cut_through.withdraw(run_id, hop_index)
            self.journal.event(
                run_id,
                EventKind.HOP_COMPLETED,
                hop_index=hop_index,
                site_id=site_id,
                metrics={
                    **{f"before_{k}": v for k, v in metrics_before.items()},
                    **{f"after_{k}": v for k, v in metrics_after.items()},
                    "train_seconds": train_seconds,
                },
            )
            self.journal.record(
                "hop_completed",
                run_id,
                hop=hop_index,
                detail={
                    "site": site_id,
                    "manifest": manifest_digest(output_manifest),
                    "blob": output.blob_id,
                },
            )
            self._advance(run_id)

    def fail_hop(
        self, site_id: str, run_id: str, hop_index: int, *, reason: str, message: str
    ) -> None:
        """Records a hop the site could not complete; the run's ``[faults] on_failed_hop``
        policy decides what follows (by default the run fails; the last verified model
        stays in the blob store). A ``transfer_error`` whose input copy here is missing or
        fails its hash has that copy sealed again instead (:meth:`Recovery.reseal_input`)."""
        hop = self.hop_for_site(site_id, run_id, hop_index)
        # A download that failed its hash may be the coordinator's copy, not the link: then
        # the sender seals it again and no fault policy applies (read outside the lock).
        bad = None
        if hop.input is not None and reason == "transfer_error":
            bad = copy_problem(self._blobs, hop.input)
        with self.journal.transaction():
            self.hop_for_site(site_id, run_id, hop_index)
            detail = f"{reason}: {message}" if message else reason
            self.journal.event(
                run_id, EventKind.HOP_FAILED, hop_index=hop_index, site_id=site_id, message=detail
            )
            self.journal.record(
                "hop_failed", run_id, hop=hop_index, detail={"site": site_id, "reason": reason}
            )
            if bad is not None:
                self.recovery.reseal_input(run_id, hop_index, bad)
            else:
                self._store.fail_hop(run_id, hop_index, error=detail)
                self.recovery.handle(run_id, hop_index, Fault.FAILED, detail)
        logger.warning("run %s: hop %d at %s failed: %s", run_id, hop_index + 1, site_id, detail)

    # -- internals --------------------------------------------------------------------

    def _resume(self, run_id: str) -> None:
        """Ends a running run that holds a failed hop (a crash cut its transition short in
        an older version), else re-drives it."""
        failed = [h for h in self._store.list_hops(run_id) if h.state is HopState.FAILED]
        if failed:
            hop = failed[0]
            self._end_failed(
                run_id, f"hop {hop.hop_index + 1} at {hop.site_id} failed: {hop.error}"
            )
        else:
            self._advance(run_id)

    def _end_failed(self, run_id: str, failure: str) -> None:
        """Fails a running run (inside a transaction); its open hops die with it."""
        self.recovery.end_failed(run_id, failure)

    def _advance(self, run_id: str) -> None:
        """Assigns the next hop, having planned the cycle of the hop after it (so the
        assignment names its recipient), or finishes the run. While a hop is in flight it
        only plans its recipient, if a coordinator of an older version left it unplanned."""
        run = self._store.get_run(run_id)
        if run.state is not RunState.RUNNING:
            return
        hops = self._store.list_hops(run_id)
        busy = [h.hop_index for h in hops if h.state is HopState.ASSIGNED]
        if busy:
            plan_through(self._store, run, busy[0] + 1)
            return
        done = [h for h in hops if h.state is HopState.COMPLETED]
        if len(done) == run.total_hops:
            result = done[-1].output
            self._store.update_run(run_id, state=RunState.SUCCEEDED, result=result)
            self.journal.event(run_id, EventKind.RUN_SUCCEEDED, message="every hop completed")
            self.evaluations.succeeded(run_id)
            self.journal.record(
                "run_succeeded", run_id, detail={"result": result.blob_id if result else ""}
            )
            logger.info("run %s succeeded", run_id)
            return
        nxt = len(done)
        plan_through(self._store, run, nxt + 1)
        hop = self._store.assign_hop(run_id, nxt, input=done[-1].output if done else None)
        self.clocks.restart(run_id, nxt, hop.site_id)
        self.journal.event(
            run_id,
            EventKind.HOP_ASSIGNED,
            hop_index=nxt,
            site_id=hop.site_id,
            message=f"cycle {hop.cycle + 1}",
        )
