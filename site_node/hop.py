"""One hop at a site: open the sealed incoming model, evaluate, train, evaluate, seal it to
the next party and hand it on, all through the site's port to the coordinator.

Receiving (:mod:`site_node.receive`) checks the plan, the sender and the envelope before
anything is trained; handing on (:mod:`site_node.handover`) checks the recipient the
assignment names. Plaintext models exist only in this site's private work directory, and
only while the hop runs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from baton.domain import Assignment
from baton.errors import (
    BatonError,
    BlobError,
    ConfigError,
    DataError,
    Denied,
    ModelError,
    ParallelError,
    PkiError,
    Rejected,
    SealError,
    TrainingInterrupted,
    TransportError,
)
from baton.ml.codec import save_state_file
from baton.ml.gate import GatePolicy, require_passing
from baton.ml.portable import result_metadata
from baton.ml.trainer import TrainResult, hop_seed, train_local
from baton.security.audit import AuditLog
from baton.security.replay import ReplayGuard
from baton.security.sealing import AppKeys, manifest_digest
from baton.security.tls import TlsMaterial
from baton.wire.channel import EVALUATION_STAGE
from site_node.client import CoordinatorClient, HopDone
from site_node.config import SiteTraining
from site_node.handover import Verified, recipient_of, seal_for_next
from site_node.local_training import site_device, site_plan, train_parallel
from site_node.outbox import Outbox, Sent, hand_on_again, recipient_key
from site_node.own_copy import OwnCopy
from site_node.parallel.plans import ParallelPlan, PlanKind
from site_node.progress import KEEPALIVE_SECONDS, ProgressReports
from site_node.receive import Inbox, LocalData

__all__ = ["HopRunner", "LocalData"]

logger = logging.getLogger(__name__)

_REASONS: tuple[tuple[type[BatonError], str], ...] = (
    (SealError, "rejected_hop"),
    (ConfigError, "invalid_plan"),
    (DataError, "data_error"),
    (ModelError, "model_error"),
    (BlobError, "transfer_error"),
    (PkiError, "untrusted_party"),
    (ParallelError, "training_error"),
    (Rejected, "coordinator_refused"),
)


class HopRunner:
    """Carries out assignments for one site.

    Args:
        client: The site's port to the coordinator.
        tls: The site's TLS material (its identity and pinned CA).
        keys: The site's application keys (signing, encryption).
        local: The site's dataset.
        work_dir: Private directory for models in transit.
        replay: Remembers every hop this site accepted, across restarts.
        audit: This site's signed, hash-chained audit log.
        revoked: Whether a certificate (PEM) is on the federation's revocation list.
        training: How this site trains (in process, or with a parallel plan).
        data_gate: What fails this site's data gate, run before each hop trains.
        stopping: Whether the site is stopping: a training hop then stops (its workers, or
            the in-process loop after its step) and keeps its checkpoints, without failing
            the hop.
        progress_every: Most seconds without a progress report while a hop trains.
    """

    def __init__(
        self,
        client: CoordinatorClient,
        *,
        tls: TlsMaterial,
        keys: AppKeys,
        local: LocalData,
        work_dir: Path,
        replay: ReplayGuard,
        audit: AuditLog,
        revoked: Callable[[bytes | str], bool] = lambda pem: False,
        training: SiteTraining | None = None,
        data_gate: GatePolicy | None = None,
        stopping: Callable[[], bool] = lambda: False,
        progress_every: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._progress_every = progress_every
        self._outbox = Outbox(work_dir)
        self._training = training or SiteTraining()
        self._data_gate = data_gate or GatePolicy()
        self._stopping = stopping
        self._revoked = revoked
        self._client = client
        self._tls = tls
        self._keys = keys
        self._local = local
        self._work_dir = work_dir
        self._audit = audit
        self._inbox = Inbox(
            client=client,
            tls=tls,
            keys=keys,
            local=local,
            replay=replay,
            audit=audit,
            revoked=revoked,
        )

    def run(self, a: Assignment) -> bool:
        """Runs one assignment; returns whether it completed.

        A Baton error fails the hop at the coordinator with a sanitized reason. Errors of
        the coordinator client (TransportError: unreachable or refused the call; Denied:
        refused this site) propagate: the hop is redelivered after a reconnect. A hop
        without a recipient (``next_hop``) is refused before anything is downloaded. A
        refused call (Rejected: the input blob is gone, the upload cannot be stored) fails
        the hop once. A hop whose sealed output this site kept (:mod:`site_node.outbox`)
        is handed on again without training: as sealed, or re-sealed when the assignment
        names another recipient.
        """
        if a.evaluate_only:
            self._outbox.drop_run(a.run_id)  # the run is over
            return self._evaluate(a)
        self._outbox.release(a.run_id, assigned_hop=a.hop_index)
        try:
            self._run(a)
            return True
        except (TransportError, Denied):
            raise
        except TrainingInterrupted:
            logger.warning(
                "run %s hop %d: stopped mid-training; the hop resumes from its newest "
                "checkpoint when it is delivered again",
                a.run_id,
                a.hop_index + 1,
            )
        except BatonError as exc:
            reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "site_error")
            logger.error("run %s hop %d failed: %s", a.run_id, a.hop_index + 1, exc.message)
            detail = {"reason": reason}
            if isinstance(exc, SealError):
                detail["check"] = exc.reason
            self._audit.append("hop_rejected", run_id=a.run_id, hop=a.hop_index, detail=detail)
            # The coordinator learns the category only; details stay in this site's log.
            self.fail(a, reason, "" if isinstance(exc, SealError | PkiError) else exc.message)
        except Exception:
            logger.exception("run %s hop %d failed unexpectedly", a.run_id, a.hop_index + 1)
            self.fail(a, "internal_error", "unexpected error at the site; see the site's log")
        return False

    def _run(self, a: Assignment) -> None:
        started = time.monotonic()
        nxt = recipient_of(a)
        run_dir = self._work_dir / a.run_id
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = self._outbox.get(a.run_id, a.hop_index)
        again = None if kept is None else hand_on_again(
            self._outbox, kept, a, nxt,
            tls=self._tls, keys=self._keys, revoked=self._revoked, audit=self._audit,
        )  # fmt: skip
        if again is not None:
            self._hand_on(a, again, started)
            return
        out_dir = self._outbox.path(a.run_id, a.hop_index)
        plain_in = run_dir / f"hop-{a.hop_index:05d}.in.safetensors"
        plain_out = run_dir / f"hop-{a.hop_index:05d}.out.safetensors"
        nodes = self._training.node_group()
        # Several machines train from a directory they all see.
        job_root = run_dir if nodes is None else nodes.shared_dir / a.run_id
        job_dir = job_root / f"hop-{a.hop_index:05d}.job"
        own_copy: OwnCopy | None = None
        try:
            # Bad local data fails the hop before the model is fetched or anything trains.
            require_passing(self._local.schema, self._local.data, self._data_gate)
            model, checked = self._inbox.receive(a, run_dir, plain_in)
            hooks = self._local.hooks
            device = site_device(self._training)
            parallel = (
                ParallelPlan(kind=PlanKind.SINGLE)
                if hooks.trains_itself
                else site_plan(
                    self._training,
                    model,
                    checked.plan,
                    num_examples=len(self._local.data.train),
                    device=device,
                )
            )
            before = hooks.evaluate(model, self._local.data.val)
            self._report(a, "before", before)
            result = self._train(a, model, checked, parallel, job_dir=job_dir, device=device)
            after = hooks.evaluate(model, self._local.data.val)
            metric = self._local.task.primary_metric.name
            logger.info(
                "hop %d: val %s %.4f -> %.4f after %d steps (%.2fs)",
                a.hop_index + 1,
                metric,
                before.get(metric, float("nan")),
                after.get(metric, float("nan")),
                result.steps,
                result.train_seconds,
            )
            meta = result_metadata(checked.plan, self._local.schema, a, checked.plan_digest)
            save_state_file(plain_out, hooks.travelling_state(model), metadata=meta)
            out_dir.mkdir(mode=0o700, exist_ok=True)
            sent = Sent(
                run_id=a.run_id,
                hop_index=a.hop_index,
                directory=out_dir,
                recipient=recipient_key(nxt),
                manifest=b"",
                own_manifest=b"",
                plan_digest=checked.plan_digest,
                schema_digest=checked.schema_digest,
                input_digest=checked.input_digest,
                sealed_at=time.time(),
                metrics_before=before,
                metrics_after=after,
                num_examples=result.num_examples,
                train_seconds=result.train_seconds,
            )
            manifest = seal_for_next(
                nxt, a, checked, plain_out, sent.sealed,
                tls=self._tls, keys=self._keys, revoked=self._revoked,
            )  # fmt: skip
            sent = dataclasses.replace(sent, manifest=manifest)
            self._outbox.put(sent)  # from here a restarted site hands this ciphertext on
            own_copy = OwnCopy(
                plain_out, sent, a=a, checked=checked, tls=self._tls, keys=self._keys
            )  # sealed while the upload runs; it deletes plain_out
        except TrainingInterrupted:
            raise
        except Exception:
            # Failed for good: no checkpoint of this hop will be resumed, nothing half-sealed kept.
            shutil.rmtree(job_dir, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        finally:
            # The model leaves this site only sealed; plaintext copies go as soon as possible.
            # The job directory of a hop the daemon was stopped in the middle of stays
            # (private, 0700) for the hop's next delivery to resume from.
            plain_in.unlink(missing_ok=True)
            if own_copy is None:
                plain_out.unlink(missing_ok=True)
        self._hand_on(a, sent, started, own_copy)

    def _hand_on(
        self, a: Assignment, sent: Sent, started: float, own_copy: OwnCopy | None = None
    ) -> None:
        """Uploads ``sent`` (while ``own_copy``, if any, is sealed) and completes hop ``a``.
        The sealed output stays in the outbox until the hop after it is done (see
        :mod:`site_node.outbox`)."""
        try:
            ref = self._client.upload(
                run_id=a.run_id, hop_index=a.hop_index, source=sent.sealed, manifest=sent.manifest
            )
        except BaseException:
            if own_copy is not None:
                own_copy.settle(self._outbox, sent, quiet=True)
            raise
        if own_copy is not None:
            sent = own_copy.settle(self._outbox, sent)
        digests = {"manifest": manifest_digest(sent.manifest), "blob": ref.blob_id}
        self._audit.append("hop_sent", run_id=a.run_id, hop=a.hop_index, detail=digests)
        self._client.complete_hop(
            HopDone(
                run_id=a.run_id,
                hop_index=a.hop_index,
                output=ref,
                output_manifest=sent.manifest,
                metrics_before=dict(sent.metrics_before),
                metrics_after=dict(sent.metrics_after),
                num_examples=sent.num_examples,
                train_seconds=sent.train_seconds,
            )
        )
        self._outbox.put(dataclasses.replace(sent, completed=True))
        (self._work_dir / a.run_id / f"hop-{a.hop_index:05d}.in.sealed").unlink(missing_ok=True)
        took = time.monotonic() - started
        logger.info("hop %d done in %.2fs; sealed model handed on", a.hop_index + 1, took)

    def _train(
        self,
        a: Assignment,
        model: nn.Module,
        checked: Verified,
        parallel: ParallelPlan,
        *,
        job_dir: Path,
        device: str,
    ) -> TrainResult:
        """Trains ``model`` in place on this site's training split: in this process, or with
        ``parallel`` on worker processes; either checkpoints in ``job_dir`` and resumes from
        it (audited as ``training_resumed``)."""
        seed = hop_seed(checked.plan.run.seed, a.hop_index)
        num_sites = len(checked.plan.run.sites)
        hooks = self._local.hooks
        reports = ProgressReports(
            lambda metrics: self._report(a, "progress", metrics), keepalive=self._progress_every
        )
        train = self._local.data.train
        with reports:
            if hooks.trains_itself:
                result = hooks.train(
                    model, train, checked.plan.training,
                    seed=seed, hop_index=a.hop_index, num_sites=num_sites, progress=reports,
                )  # fmt: skip
            elif parallel.kind == PlanKind.SINGLE and device == "cpu":
                result = train_local(
                    model, train, hooks.training_policy(checked.plan.training),
                    seed=seed, hop_index=a.hop_index, num_sites=num_sites, progress=reports,
                    checkpoint_dir=job_dir, checkpoint_every=self._training.checkpoint_every,
                    should_stop=self._stopping,
                )  # fmt: skip
            else:
                result = train_parallel(
                    model, train, hooks.training_plan(checked.plan), parallel,
                    launcher=self._training.launcher, job_dir=job_dir, seed=seed,
                    hop_index=a.hop_index, num_sites=num_sites, progress=reports,
                    checkpoint_every=self._training.checkpoint_every,
                    restarts=self._training.restarts, should_stop=self._stopping,
                    nodes=self._training.node_group(), device=device,
                )  # fmt: skip
        if result.resumed_from_step:
            detail = {"step": result.resumed_from_step, "steps": result.steps}
            self._audit.append("training_resumed", run_id=a.run_id, hop=a.hop_index, detail=detail)
        return result

    def _evaluate(self, a: Assignment) -> bool:
        """Opens a finished run's final model (sealed to this site too, as the signed plan
        asked), evaluates it on the validation split and reports the metrics. A refused
        model is logged and audited; the coordinator then never hears from this site."""
        run_dir = self._work_dir / a.run_id
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        plain = run_dir / "final.in.safetensors"
        try:
            model, checked = self._inbox.receive(a, run_dir, plain)
            if not checked.plan.run.evaluate_at_sites:
                raise PkiError(f"the signed plan of run {a.run_id} asks for no evaluation")
            metrics = self._local.hooks.evaluate(model, self._local.data.val)
        except (TransportError, Denied):
            raise
        except BatonError as exc:
            logger.error("run %s: the final model was not evaluated: %s", a.run_id, exc.message)
            self._audit.append(
                "evaluation_refused",
                run_id=a.run_id,
                hop=a.hop_index,
                detail={"reason": exc.reason if isinstance(exc, SealError) else type(exc).__name__},
            )
            return False
        finally:
            plain.unlink(missing_ok=True)
            (run_dir / f"hop-{a.hop_index:05d}.in.sealed").unlink(missing_ok=True)
        self._report(a, EVALUATION_STAGE, metrics)
        # The task's own metrics: its primary one, and the loss when it reports one.
        metric = self._local.task.primary_metric.name
        detail = {k: metrics[k] for k in (metric, "loss") if k in metrics}
        self._audit.append("model_evaluated", run_id=a.run_id, hop=a.hop_index, detail=detail)
        score = metrics.get(metric, float("nan"))
        logger.info("run %s: the final model scores val %s %.4f here", a.run_id, metric, score)
        return True

    def _report(self, a: Assignment, stage: str, metrics: dict[str, float]) -> None:
        self._client.report_metrics(
            run_id=a.run_id, hop_index=a.hop_index, stage=stage, metrics=metrics
        )

    def fail(self, a: Assignment, reason: str, message: str) -> None:
        """Tells the coordinator hop ``a`` failed (``reason``, ``message``), once; best effort."""
        try:
            self._client.fail_hop(
                run_id=a.run_id, hop_index=a.hop_index, reason=reason, message=message
            )
        except (TransportError, Denied, Rejected) as exc:
            # Reported once: a refused or undelivered report is only logged.
            logger.error("could not report the failure to the coordinator: %s", exc.message)
