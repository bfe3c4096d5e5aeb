"""One hop at a site: open the sealed incoming model, evaluate, train, evaluate, seal it to
the next party and hand it on.

The order of checks follows the hop protocol: the plan's signature and the sender's
certified keys first, then the envelope (verified before decrypted, decrypted before
parsed), then the weights against the model the plan names. Plaintext models exist only in
this site's private work directory, and only while the hop runs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from torch import nn

from baton.errors import (
    BatonError,
    BlobError,
    ConfigError,
    DataError,
    ModelError,
    ParallelError,
    PkiError,
    SealError,
    TrainingInterrupted,
)
from baton.ml.codec import load_into, load_state_file, save_state_file, schema_hash, state_of
from baton.ml.data import Schema, SiteData
from baton.ml.models import plan_model
from baton.ml.trainer import evaluate, hop_seed, train_local
from baton.plan import parse_plan
from baton.security.audit import AuditLog
from baton.security.envelope import Expectation, open_file
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
from baton.security.tls import TlsMaterial
from baton.v1 import site_pb2, site_pb2_grpc
from baton.wire.channel import EVALUATION_STAGE
from baton.wire.serde import blob_ref_from_proto, blob_ref_to_proto
from site_node import transfer
from site_node.config import SiteTraining
from site_node.handover import Verified, refuse_revoked, seal_for_next
from site_node.local_training import site_device, site_plan, train_parallel
from site_node.parallel.plans import PlanKind

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5
"""Least time between two progress reports to the coordinator."""
MAX_MODEL_BYTES = 64 << 30
"""Largest decrypted model a site accepts."""

_REASONS: tuple[tuple[type[BatonError], str], ...] = (
    (SealError, "rejected_hop"),
    (ConfigError, "invalid_plan"),
    (DataError, "data_error"),
    (ModelError, "model_error"),
    (BlobError, "transfer_error"),
    (PkiError, "untrusted_party"),
    (ParallelError, "training_error"),
)


class _Reporter(Protocol):
    def __call__(
        self, step: int, total: int, loss: float, extra: dict[str, float] | None = None
    ) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalData:
    """The site's own dataset, as read from its data directory."""

    schema: Schema
    data: SiteData


class HopRunner:
    """Carries out assignments for one site.

    Args:
        stub: Site service stub on the current channel.
        tls: The site's TLS material (its identity and pinned CA).
        keys: The site's application keys (signing, encryption).
        local: The site's dataset.
        work_dir: Private directory for models in transit.
        replay: Remembers every hop this site accepted, across restarts.
        audit: This site's signed, hash-chained audit log.
        revoked: Whether a certificate (PEM) is on the federation's revocation list.
        training: How this site trains (in process, or with a parallel plan).
        stopping: Whether the site is stopping: a parallel hop then stops its workers and
            keeps its checkpoints, without failing the hop.
    """

    def __init__(
        self,
        stub: site_pb2_grpc.SiteServiceStub,
        *,
        tls: TlsMaterial,
        keys: AppKeys,
        local: LocalData,
        work_dir: Path,
        replay: ReplayGuard,
        audit: AuditLog,
        revoked: Callable[[bytes | str], bool] = lambda pem: False,
        training: SiteTraining | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._training = training or SiteTraining()
        self._stopping = stopping
        self._revoked = revoked
        self._stub = stub
        self._tls = tls
        self._keys = keys
        self._local = local
        self._work_dir = work_dir
        self._replay = replay
        self._audit = audit
        self._me = tls.identity

    def run(self, a: site_pb2.Assignment) -> bool:
        """Runs one assignment; returns whether it completed. A Baton error fails the hop
        at the coordinator with a sanitized reason; connection errors propagate."""
        if a.evaluate_only:
            return self._evaluate(a)
        try:
            self._run(a)
            return True
        except grpc.RpcError:
            raise
        except TrainingInterrupted:
            logger.warning(
                "run %s hop %d: stopped mid-training; the hop resumes from its newest "
                "checkpoint when it is delivered again",
                a.run_id,
                a.hop_index,
            )
        except BatonError as exc:
            reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "site_error")
            logger.error("run %s hop %d failed: %s", a.run_id, a.hop_index, exc.message)
            detail = {"reason": reason}
            if isinstance(exc, SealError):
                detail["check"] = exc.reason
            self._audit.append("hop_rejected", run_id=a.run_id, hop=a.hop_index, detail=detail)
            # The coordinator learns the category only; details stay in this site's log.
            self._fail(a, reason, "" if isinstance(exc, SealError | PkiError) else exc.message)
        except Exception:
            logger.exception("run %s hop %d failed unexpectedly", a.run_id, a.hop_index)
            self._fail(a, "internal_error", "unexpected error at the site; see the site's log")
        return False

    def _run(self, a: site_pb2.Assignment) -> None:
        started = time.monotonic()
        run_dir = self._work_dir / a.run_id
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        plain_in = run_dir / f"hop-{a.hop_index:05d}.in.safetensors"
        plain_out = run_dir / f"hop-{a.hop_index:05d}.out.safetensors"
        nodes = self._training.node_group()
        # Several machines train from a directory they all see.
        job_root = run_dir if nodes is None else nodes.shared_dir / a.run_id
        job_dir = job_root / f"hop-{a.hop_index:05d}.job"
        try:
            model, checked = self._receive(a, run_dir, plain_in)
            device = site_device(self._training)
            parallel = site_plan(
                self._training,
                model,
                checked.plan,
                num_examples=len(self._local.data.train),
                device=device,
            )
            before = evaluate(model, self._local.data.val)
            self._report(a, "before", before)
            seed = hop_seed(checked.plan.run.seed, a.hop_index)
            num_sites = len(checked.plan.run.sites)
            if parallel.kind == PlanKind.SINGLE and device == "cpu":
                result = train_local(
                    model,
                    self._local.data.train,
                    checked.plan.training,
                    seed=seed,
                    hop_index=a.hop_index,
                    num_sites=num_sites,
                    progress=self._progress_reporter(a),
                )
            else:
                result = train_parallel(
                    model,
                    self._local.data.train,
                    checked.plan,
                    parallel,
                    launcher=self._training.launcher,
                    job_dir=job_dir,
                    seed=seed,
                    hop_index=a.hop_index,
                    num_sites=num_sites,
                    progress=self._progress_reporter(a),
                    checkpoint_every=self._training.checkpoint_every,
                    restarts=self._training.restarts,
                    should_stop=self._stopping,
                    nodes=nodes,
                    device=device,
                )
                if result.resumed_from_step:
                    self._audit.append(
                        "training_resumed",
                        run_id=a.run_id,
                        hop=a.hop_index,
                        detail={"step": result.resumed_from_step, "steps": result.steps},
                    )
            after = evaluate(model, self._local.data.val)
            logger.info(
                "hop %d: val accuracy %.4f -> %.4f after %d steps (%.2fs)",
                a.hop_index,
                before["accuracy"],
                after["accuracy"],
                result.steps,
                result.train_seconds,
            )
            save_state_file(plain_out, state_of(model))
            sealed = run_dir / f"hop-{a.hop_index:05d}.out.sealed"
            manifest = self._seal(a, checked, plain_out, sealed)
        except TrainingInterrupted:
            raise
        except Exception:
            # Failed for good: no checkpoint of this hop will be resumed.
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        finally:
            # The model leaves this site only sealed; plaintext copies go as soon as possible.
            # The job directory of a hop the daemon was stopped in the middle of stays
            # (private, 0700) for the hop's next delivery to resume from.
            plain_in.unlink(missing_ok=True)
            plain_out.unlink(missing_ok=True)
        ref = transfer.upload(self._stub, run_id=a.run_id, hop_index=a.hop_index, source=sealed)
        self._audit.append(
            "hop_sent",
            run_id=a.run_id,
            hop=a.hop_index,
            detail={"manifest": manifest_digest(manifest), "blob": ref.blob_id},
        )
        self._stub.CompleteHop(
            site_pb2.CompleteHopRequest(
                run_id=a.run_id,
                hop_index=a.hop_index,
                output=blob_ref_to_proto(ref),
                metrics_before=before,
                metrics_after=after,
                num_examples=result.num_examples,
                train_seconds=result.train_seconds,
                output_manifest=manifest,
            )
        )
        # Handed on: the coordinator holds the sealed copy now.
        sealed.unlink(missing_ok=True)
        (run_dir / f"hop-{a.hop_index:05d}.in.sealed").unlink(missing_ok=True)
        logger.info(
            "hop %d done in %.2fs; sealed model handed on", a.hop_index, time.monotonic() - started
        )

    def _evaluate(self, a: site_pb2.Assignment) -> bool:
        """Opens a finished run's final model (sealed to this site too, as the signed plan
        asked), evaluates it on the validation split and reports the metrics. A refused
        model is logged and audited; the coordinator then never hears from this site."""
        run_dir = self._work_dir / a.run_id
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        plain = run_dir / "final.in.safetensors"
        try:
            model, checked = self._receive(a, run_dir, plain)
            if not checked.plan.run.evaluate_at_sites:
                raise PkiError(f"the signed plan of run {a.run_id} asks for no evaluation")
            metrics = evaluate(model, self._local.data.val)
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
        self._stub.ReportMetrics(
            site_pb2.ReportMetricsRequest(
                run_id=a.run_id, hop_index=a.hop_index, stage=EVALUATION_STAGE, metrics=metrics
            )
        )
        self._audit.append(
            "model_evaluated",
            run_id=a.run_id,
            hop=a.hop_index,
            detail={"accuracy": metrics["accuracy"], "loss": metrics["loss"]},
        )
        logger.info(
            "run %s: the final model scores val accuracy %.4f here", a.run_id, metrics["accuracy"]
        )
        return True

    def _receive(
        self, a: site_pb2.Assignment, run_dir: Path, plain_in: Path
    ) -> tuple[nn.Module, Verified]:
        ca = self._tls.ca_pem
        owner = check_owner(ca, a.owner_signing_certificate_pem, a.owner_encryption_certificate_pem)
        self._refuse_revoked(
            "the study owner", a.owner_signing_certificate_pem, a.owner_encryption_certificate_pem
        )
        plan_digest = verify_plan(a.plan_toml, a.plan_signature, owner)
        self._audit.append(
            "plan_accepted",
            run_id=a.run_id,
            hop=a.hop_index,
            detail={"plan": plan_digest, "owner": owner.identity.spiffe_id},
        )
        plan = parse_plan(a.plan_toml, source=f"plan of run {a.run_id}")
        schema = self._local.schema
        if plan.task.dataset != schema.task:
            raise DataError(
                f"run {a.run_id} trains task {plan.task.dataset!r}, "
                f"but this site holds {schema.task!r}"
            )
        if self._me.name not in plan.run.sites:
            raise PkiError(f"the signed plan of run {a.run_id} does not list this site")
        model = plan_model(plan, schema)
        schema_digest = schema_hash(state_of(model))
        incoming = blob_ref_from_proto(a.input)
        input_digest = plan_digest
        if incoming is None:
            if a.hop_index != 0:
                raise SealError("wrong_context", f"hop {a.hop_index} arrived without a model")
            logger.info("hop 0: building the initial %s model from the plan", plan.model.name)
        else:
            sender = check_party(
                ca,
                a.sender_signing_certificate_pem,
                a.sender_encryption_certificate_pem,
                Identity(federation=self._me.federation, kind="site", name=a.previous_site_id),
            )
            self._refuse_revoked(
                f"site {a.previous_site_id}",
                a.sender_signing_certificate_pem,
                a.sender_encryption_certificate_pem,
            )
            sealed = run_dir / f"hop-{a.hop_index:05d}.in.sealed"
            transfer.download(
                self._stub, run_id=a.run_id, hop_index=a.hop_index, blob=incoming, dest=sealed
            )
            # Retrying this very hop (after a lost connection or a restart) presents the
            # input this site already accepted for it: open it again. Any other manifest
            # for that hop (equivocation) or an older hop (rollback) is still refused.
            retry = (
                self._replay.check(a.run_id, a.hop_index - 1, manifest_digest(a.input_manifest))
                == "replay"
            )
            if retry:
                logger.info("hop %d: resuming; its input was accepted before", a.hop_index)
            manifest = open_file(
                sealed,
                plain_in,
                a.input_manifest,
                me=self._me.spiffe_id,
                my_key=self._keys.encryption_key,
                expect=Expectation(
                    run_id=a.run_id,
                    hop_index=a.hop_index - 1,
                    sender=sender.identity.spiffe_id,
                    previous_manifest_hash=expected_previous(plan_digest, a.previous_manifest),
                    plan_hash=plan_digest,
                    schema_hash=schema_digest,
                    max_plaintext_bytes=MAX_MODEL_BYTES,
                ),
                sender_key=sender.signing_key,
                replay=MemoryReplayGuard() if retry else self._replay,
            )
            load_into(model, load_state_file(plain_in), max_norm=plan.security.max_weight_norm)
            input_digest = manifest.digest
            self._audit.append(
                "hop_resumed" if retry else "hop_received",
                run_id=a.run_id,
                hop=a.hop_index,
                detail={"manifest": manifest.digest, "sender": manifest.sender},
            )
            logger.info("hop %d: opened the model sealed by %s", a.hop_index, a.previous_site_id)
        checked = Verified(
            plan=plan,
            owner=owner,
            plan_digest=plan_digest,
            schema_digest=schema_digest,
            input_digest=input_digest,
        )
        return model, checked

    def _seal(self, a: site_pb2.Assignment, checked: Verified, plain: Path, sealed: Path) -> bytes:
        return seal_for_next(
            self._stub,
            a,
            checked,
            plain,
            sealed,
            tls=self._tls,
            keys=self._keys,
            revoked=self._revoked,
        )

    def _refuse_revoked(self, who: str, *pems: str) -> None:
        refuse_revoked(self._revoked, who, *pems)

    def _report(self, a: site_pb2.Assignment, stage: str, metrics: dict[str, float]) -> None:
        self._stub.ReportMetrics(
            site_pb2.ReportMetricsRequest(
                run_id=a.run_id, hop_index=a.hop_index, stage=stage, metrics=metrics
            )
        )

    def _progress_reporter(self, a: site_pb2.Assignment) -> _Reporter:
        last = [0.0]

        def report(
            step: int, total: int, loss: float, extra: dict[str, float] | None = None
        ) -> None:
            now = time.monotonic()
            if step < total and now - last[0] < PROGRESS_INTERVAL_SECONDS:
                return
            last[0] = now
            metrics = {"step": float(step), "total_steps": float(total), "loss": loss}
            self._report(a, "progress", {**metrics, **(extra or {})})

        return report

    def _fail(self, a: site_pb2.Assignment, reason: str, message: str) -> None:
        try:
            self._stub.FailHop(
                site_pb2.FailHopRequest(
                    run_id=a.run_id, hop_index=a.hop_index, reason=reason, message=message
                )
            )
        except grpc.RpcError as exc:
            logger.error("could not report the failure to the coordinator: %s", exc.code().name)
