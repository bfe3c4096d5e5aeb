"""The run engine: creates runs, plans each cycle with ``ordering``, and advances hop by hop.

Every method is a short critical section over the store; nothing here waits on a site.
Sites learn of their hops through ``wait_for_change`` (the assignment streams), so a slow
or absent site delays only its own run, never the coordinator.

A run's hops are planned one cycle at a time: the order of cycle c+1 is chosen when the
last hop of cycle c asks who is next (its sender must know the recipient before it
uploads), so a strategy sees every completed hop of the earlier cycles.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from baton.domain import BlobRef
from baton.errors import ConfigError, ConflictError, Denied, NotFoundError
from baton.plan import RunPlan, check_names, parse_plan
from baton.security.audit import AuditLog
from baton.security.sealing import check_owner, manifest_digest, verify_plan
from coordinator.blobs import BlobStore
from coordinator.store.base import EventKind, HopRecord, HopState, RunRecord, RunState, Store
from ordering import HopOutcome, OrderingContext, ProbeOutcome, known_strategies, make_strategy

logger = logging.getLogger(__name__)


def now_ms() -> int:
    """Wall-clock Unix milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedPlan:
    """The study owner's signature over a plan, with the owner's certificates."""

    signature: bytes
    owner_signing_pem: str
    owner_encryption_pem: str


class Scheduler:
    """Owns every state transition of runs and hops.

    Args:
        store: Durable state.
        blobs: The blob store, to check that uploaded outputs exist.
        ca_pem: The federation CA, to check the study owner's certificates.
        audit: The coordinator's signed audit log (None only in unit tests).
        clock: Source of Unix milliseconds (tests inject a fake).
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        *,
        ca_pem: bytes,
        audit: AuditLog | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._audit = audit
        self._blobs = blobs
        self._ca_pem = ca_pem
        self._clock = clock
        self._changed = threading.Condition(threading.RLock())
        self._version = 0
        # Runs whose evaluations need no more looking at: their plan asks for none, or
        # every site has reported. Plans never change, and neither do reports.
        self._evaluations_settled: set[str] = set()

    # -- change notification ----------------------------------------------------------

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Blocks until the state changed after version ``seen`` or ``timeout`` passed.

        Returns the current version; callers pass it back next time.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version

    @property
    def version(self) -> int:
        """Counter bumped on every change."""
        with self._changed:
            return self._version

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    # -- runs -------------------------------------------------------------------------

    def create_run(self, plan_toml: str, signed: SignedPlan) -> RunRecord:
        """Validates a plan, records the run, plans cycle 0 and assigns hop 0.

        Raises:
            ConfigError: the plan is invalid, or names a site that never registered.
            PkiError: the owner's certificates or the plan's signature do not verify.
        """
        plan = parse_plan(plan_toml, source="run plan")
        check_names(plan, source="run plan", strategies=known_strategies())
        owner = check_owner(self._ca_pem, signed.owner_signing_pem, signed.owner_encryption_pem)
        digest = verify_plan(plan_toml, signed.signature, owner)
        known = {s.site_id for s in self._store.list_sites()}
        missing = [s for s in plan.run.sites if s not in known]
        if missing:
            raise ConfigError(f"run plan names sites that never registered: {', '.join(missing)}")
        self._check_probe_runs(plan)
        run = RunRecord(
            run_id=uuid.uuid4().hex,
            name=plan.run.name,
            plan_toml=plan_toml,
            sites=plan.run.sites,
            cycles=plan.run.cycles,
            strategy=plan.ordering.strategy,
            total_hops=plan.total_hops,
            created_ms=self._clock(),
            plan_signature=signed.signature,
            owner_signing_certificate_pem=signed.owner_signing_pem,
            owner_encryption_certificate_pem=signed.owner_encryption_pem,
        )
        with self._changed:
            self._store.create_run(run)
            self._event(run.run_id, EventKind.RUN_CREATED, message=f"run {run.name!r} created")
            self._record(
                "run_created",
                run.run_id,
                detail={"plan": digest, "owner": owner.identity.spiffe_id},
            )
            self._plan_cycle(run, plan, 0)
            self._advance(run.run_id)
            self._bump()
        logger.info("run %s created: %d sites, %d hops", run.run_id, len(run.sites), run.total_hops)
        return self._store.get_run(run.run_id)

    def cancel_run(self, run_id: str, reason: str) -> RunRecord:
        """Stops a running run; its open hops fail."""
        with self._changed:
            run = self._store.get_run(run_id)
            if run.state is not RunState.RUNNING:
                raise ConflictError(f"run {run_id} already {run.state.value}", run_id=run_id)
            for hop in self._store.list_hops(run_id):
                if hop.state in (HopState.PENDING, HopState.ASSIGNED):
                    self._store.fail_hop(run_id, hop.hop_index, error="run cancelled")
            message = reason or "cancelled by an administrator"
            run = self._store.update_run(run_id, state=RunState.CANCELLED, error=message)
            self._event(run_id, EventKind.RUN_CANCELLED, message=message)
            self._record("run_cancelled", run_id)
            self._bump()
        return run

    def recover(self) -> None:
        """Re-drives every running run after a restart (each step is idempotent)."""
        with self._changed:
            for run in self._store.list_runs():
                if run.state is RunState.RUNNING:
                    self._advance(run.run_id)
            self._bump()

    # -- hops, as the assigned site drives them ---------------------------------------

    def hop_for_site(self, site_id: str, run_id: str, hop_index: int) -> HopRecord:
        """Returns an ASSIGNED hop of a running run, if ``site_id`` is the one assigned.

        Raises:
            NotFoundError: no such run or hop.
            Denied: the hop belongs to another site.
            ConflictError: the hop or run is not in progress.
        """
        run = self._store.get_run(run_id)
        hop = self._store.get_hop(run_id, hop_index)
        if hop.site_id != site_id:
            raise Denied(f"hop {hop_index} of run {run_id} is not assigned to {site_id}")
        if run.state is not RunState.RUNNING:
            raise ConflictError(f"run {run_id} is {run.state.value}", run_id=run_id)
        if hop.state is not HopState.ASSIGNED:
            raise ConflictError(
                f"hop {hop_index} is {hop.state.value}", run_id=run_id, hop=hop_index
            )
        return hop

    def next_hop(self, site_id: str, run_id: str, hop_index: int) -> HopRecord | None:
        """Who receives the output of ``hop_index``: the next hop, or None for the study owner.

        Plans the next cycle if the hop is the last of its cycle.
        """
        with self._changed:
            self.hop_for_site(site_id, run_id, hop_index)
            run = self._store.get_run(run_id)
            nxt = hop_index + 1
            if nxt >= run.total_hops:
                return None
            hops = self._store.list_hops(run_id)
            if nxt >= len(hops):
                self._plan_cycle(
                    run, parse_plan(run.plan_toml, source="run plan"), nxt // len(run.sites)
                )
            return self._store.get_hop(run_id, nxt)

    def progress(
        self, site_id: str, run_id: str, hop_index: int, stage: str, metrics: dict[str, float]
    ) -> None:
        """Records interim metrics of a hop in progress as an event."""
        with self._changed:
            self.hop_for_site(site_id, run_id, hop_index)
            self._event(
                run_id,
                EventKind.HOP_PROGRESS,
                hop_index=hop_index,
                site_id=site_id,
                message=stage,
                metrics=metrics,
            )
            self._bump()

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
        with self._changed:
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
            self._event(
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
            self._record(
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
            self._bump()

    def fail_hop(
        self, site_id: str, run_id: str, hop_index: int, *, reason: str, message: str
    ) -> None:
        """Records a hop the site could not complete. The run fails (no retry policy yet);
        the last verified model stays in the blob store."""
        with self._changed:
            self.hop_for_site(site_id, run_id, hop_index)
            detail = f"{reason}: {message}" if message else reason
            self._store.fail_hop(run_id, hop_index, error=detail)
            self._event(
                run_id, EventKind.HOP_FAILED, hop_index=hop_index, site_id=site_id, message=detail
            )
            self._store.update_run(
                run_id,
                state=RunState.FAILED,
                error=f"hop {hop_index} at {site_id} failed: {detail}",
            )
            self._record(
                "hop_failed", run_id, hop=hop_index, detail={"site": site_id, "reason": reason}
            )
            self._event(
                run_id,
                EventKind.RUN_FAILED,
                message=f"hop {hop_index} at {site_id} failed: {detail}",
            )
            self._bump()
        logger.warning("run %s: hop %d at %s failed: %s", run_id, hop_index, site_id, detail)

    # -- internals --------------------------------------------------------------------

    def _plan_cycle(self, run: RunRecord, plan: RunPlan, cycle: int) -> None:
        hops = self._store.list_hops(run.run_id)
        if len(hops) > cycle * len(run.sites):
            return  # already planned
        strategy = make_strategy(plan.ordering.strategy, plan.ordering.options)
        profiles = {
            s.site_id: s.profile for s in self._store.list_sites() if s.site_id in run.sites
        }
        history = tuple(
            HopOutcome(
                cycle=h.cycle,
                site_id=h.site_id,
                metrics_before=h.metrics_before,
                metrics_after=h.metrics_after,
            )
            for h in hops
            if h.state is HopState.COMPLETED
        )
        probes = self.probe_outcomes(plan)
        ctx = OrderingContext(
            sites=run.sites,
            profiles=profiles,
            history=history,
            cycle=cycle,
            seed=plan.run.seed,
            probes=probes,
        )
        order = strategy.cycle_order(ctx)
        if sorted(order) != sorted(run.sites):
            raise ConflictError(
                f"strategy {strategy.name!r} returned an order that is not a "
                "permutation of the sites"
            )
        base = cycle * len(run.sites)
        self._store.add_hops(
            run.run_id,
            [
                HopRecord(run_id=run.run_id, hop_index=base + i, cycle=cycle, site_id=s)
                for i, s in enumerate(order)
            ],
        )
        informed = f" ({len(probes)} probe run{'s' if len(probes) > 1 else ''})" if probes else ""
        logger.info("run %s cycle %d order%s: %s", run.run_id, cycle, informed, " -> ".join(order))

    def _check_probe_runs(self, plan: RunPlan) -> None:
        for probe_id in plan.ordering.probe_runs:
            try:
                probe = self._store.get_run(probe_id)
            except NotFoundError:
                raise ConfigError(f"probe run {probe_id!r} does not exist") from None
            if sorted(probe.sites) != sorted(plan.run.sites):
                raise ConfigError(f"probe run {probe_id!r} trained other sites than this plan")
            if not parse_plan(probe.plan_toml, source="probe run plan").run.evaluate_at_sites:
                raise ConfigError(
                    f"probe run {probe_id!r} was not evaluated at the sites "
                    "([run] evaluate_at_sites)"
                )

    def probe_outcomes(self, plan: RunPlan) -> tuple[ProbeOutcome, ...]:
        """The probe runs' first-cycle orders and final validation metrics, averaged over
        the sites that evaluated them (weighted by validation examples); a probe run no
        site has evaluated yet is left out."""
        out = []
        for probe_id in plan.ordering.probe_runs:
            evaluations = [
                e.metrics
                for e in self._store.list_events(probe_id)
                if e.kind is EventKind.SITE_EVALUATED
            ]
            weights = [m.get("num_examples", 1.0) for m in evaluations]
            names = set.intersection(*(set(m) for m in evaluations)) if evaluations else set()
            names.discard("num_examples")
            if not names or sum(weights) <= 0:
                continue
            order = tuple(h.site_id for h in self._store.list_hops(probe_id) if h.cycle == 0)
            mean = {
                k: sum(w * m[k] for w, m in zip(weights, evaluations, strict=True)) / sum(weights)
                for k in sorted(names)
            }
            out.append(ProbeOutcome(order=order, metrics=mean))
        return tuple(out)

    def pending_evaluations(self, site_id: str) -> list[RunRecord]:
        """Finished runs whose plan asks every site to evaluate the final model and that
        ``site_id`` has not evaluated yet."""
        return [run for run in self._store.list_runs() if self.expects_evaluation(site_id, run)]

    def expects_evaluation(self, site_id: str, run: RunRecord) -> bool:
        """Whether ``run`` has ended and awaits ``site_id``'s evaluation of its final model."""
        if run.state is not RunState.SUCCEEDED or run.run_id in self._evaluations_settled:
            return False
        if not parse_plan(run.plan_toml, source="run plan").run.evaluate_at_sites:
            self._evaluations_settled.add(run.run_id)
            return False
        reported = {
            e.site_id
            for e in self._store.list_events(run.run_id)
            if e.kind is EventKind.SITE_EVALUATED
        }
        if reported >= set(run.sites):
            self._evaluations_settled.add(run.run_id)
        return site_id in run.sites and site_id not in reported

    def evaluated(self, site_id: str, run_id: str, metrics: dict[str, float]) -> None:
        """Records a site's evaluation of a finished run's final model.

        Raises:
            NotFoundError: The run does not exist.
            ConflictError: The run did not ask ``site_id`` for an evaluation, or it has
                one from that site already.
        """
        with self._changed:
            run = self._store.get_run(run_id)
            if not self.expects_evaluation(site_id, run):
                raise ConflictError(
                    f"run {run_id} expects no evaluation from site {site_id}", run_id=run_id
                )
            self._event(
                run_id,
                EventKind.SITE_EVALUATED,
                hop_index=run.total_hops,
                site_id=site_id,
                message="evaluation",
                metrics=metrics,
            )
            self._record("site_evaluated", run_id, detail={"site": site_id})
            self._bump()

    def _advance(self, run_id: str) -> None:
        """Assigns the next hop, or finishes the run; a no-op while a hop is in flight."""
        run = self._store.get_run(run_id)
        if run.state is not RunState.RUNNING:
            return
        hops = self._store.list_hops(run_id)
        if any(h.state is HopState.ASSIGNED for h in hops):
            return
        done = [h for h in hops if h.state is HopState.COMPLETED]
        if len(done) == run.total_hops:
            result = done[-1].output
            self._store.update_run(run_id, state=RunState.SUCCEEDED, result=result)
            self._event(run_id, EventKind.RUN_SUCCEEDED, message="every hop completed")
            self._record(
                "run_succeeded", run_id, detail={"result": result.blob_id if result else ""}
            )
            logger.info("run %s succeeded", run_id)
            return
        nxt = len(done)
        if nxt >= len(hops):
            self._plan_cycle(
                run, parse_plan(run.plan_toml, source="run plan"), nxt // len(run.sites)
            )
        hop = self._store.assign_hop(run_id, nxt, input=done[-1].output if done else None)
        self._event(
            run_id,
            EventKind.HOP_ASSIGNED,
            hop_index=nxt,
            site_id=hop.site_id,
            message=f"cycle {hop.cycle}",
        )

    def _record(
        self,
        event: str,
        run_id: str,
        *,
        hop: int | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        if self._audit is not None:
            self._audit.append(event, run_id=run_id, hop=hop, detail=detail)

    def _event(
        self,
        run_id: str,
        kind: EventKind,
        *,
        hop_index: int = 0,
        site_id: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> None:
        self._store.append_event(
            run_id,
            kind,
            time_ms=self._clock(),
            hop_index=hop_index,
            site_id=site_id,
            message=message,
            metrics=metrics,
        )
