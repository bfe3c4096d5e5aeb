"""One hop at a site: fetch the incoming model, evaluate, train, evaluate, hand it on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from baton.codec import load_into, load_state_file, save_state_file, state_of
from baton.data import Schema, SiteData
from baton.errors import BatonError, BlobError, ConfigError, DataError, ModelError, PkiError
from baton.models import build_model
from baton.pki import identity_from_certificate
from baton.plan import RunPlan, parse_plan
from baton.serde import blob_ref_from_proto, blob_ref_to_proto
from baton.tls import TlsMaterial
from baton.v1 import site_pb2, site_pb2_grpc
from site_node import transfer
from site_node.trainer import evaluate, hop_seed, train_local

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5
"""Least time between two progress reports to the coordinator."""

_REASONS: tuple[tuple[type[BatonError], str], ...] = (
    (ConfigError, "invalid_plan"),
    (DataError, "data_error"),
    (ModelError, "model_error"),
    (BlobError, "transfer_error"),
    (PkiError, "recipient_untrusted"),
)


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
        local: The site's dataset.
        work_dir: Private directory for models in transit.
    """

    def __init__(
        self,
        stub: site_pb2_grpc.SiteServiceStub,
        *,
        tls: TlsMaterial,
        local: LocalData,
        work_dir: Path,
    ) -> None:
        self._stub = stub
        self._tls = tls
        self._local = local
        self._work_dir = work_dir
        self._ca = x509.load_pem_x509_certificate(tls.ca_pem)

    def run(self, a: site_pb2.Assignment) -> bool:
        """Runs one assignment; returns whether it completed. A Baton error fails the hop
        at the coordinator with a sanitized reason; connection errors propagate."""
        try:
            self._run(a)
            return True
        except grpc.RpcError:
            raise
        except BatonError as exc:
            reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "site_error")
            logger.error("run %s hop %d failed: %s", a.run_id, a.hop_index, exc.message)
            self._fail(a, reason, exc.message)
        except Exception:
            logger.exception("run %s hop %d failed unexpectedly", a.run_id, a.hop_index)
            self._fail(a, "internal_error", "unexpected error at the site; see the site's log")
        return False

    def _run(self, a: site_pb2.Assignment) -> None:
        started = time.monotonic()
        plan = parse_plan(a.plan_toml, source=f"plan of run {a.run_id}")
        schema = self._local.schema
        if plan.task.dataset != schema.task:
            raise DataError(
                f"run {a.run_id} trains task {plan.task.dataset!r}, "
                f"but this site holds {schema.task!r}"
            )
        model = build_model(
            plan.model.name,
            plan.model.args,
            num_features=len(schema.feature_names),
            num_classes=schema.num_classes,
            seed=plan.run.seed,
        )
        run_dir = self._work_dir / a.run_id
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        incoming = blob_ref_from_proto(a.input)
        if incoming is not None:
            path = run_dir / f"hop-{a.hop_index:05d}.in.safetensors"
            transfer.download(
                self._stub, run_id=a.run_id, hop_index=a.hop_index, blob=incoming, dest=path
            )
            load_into(model, load_state_file(path))
            logger.info(
                "hop %d: received model from %s (%d bytes)",
                a.hop_index,
                a.previous_site_id,
                incoming.size,
            )
        else:
            logger.info(
                "hop %d: building the initial %s model from the plan", a.hop_index, plan.model.name
            )

        before = evaluate(model, self._local.data.val)
        self._report(a, "before", before)
        result = train_local(
            model,
            self._local.data.train,
            plan.training,
            seed=hop_seed(plan.run.seed, a.hop_index),
            progress=self._progress_reporter(a),
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
        self._check_next(a, plan)
        out = run_dir / f"hop-{a.hop_index:05d}.out.safetensors"
        save_state_file(out, state_of(model))
        ref = transfer.upload(self._stub, run_id=a.run_id, hop_index=a.hop_index, source=out)
        self._stub.CompleteHop(
            site_pb2.CompleteHopRequest(
                run_id=a.run_id,
                hop_index=a.hop_index,
                output=blob_ref_to_proto(ref),
                metrics_before=before,
                metrics_after=after,
                num_examples=result.num_examples,
                train_seconds=result.train_seconds,
            )
        )
        logger.info(
            "hop %d done in %.2fs; model handed on", a.hop_index, time.monotonic() - started
        )

    def _check_next(self, a: site_pb2.Assignment, plan: RunPlan) -> None:
        """Asks who receives the model and checks that party's certificate against the pinned CA."""
        nxt = self._stub.GetNextHop(
            site_pb2.GetNextHopRequest(run_id=a.run_id, hop_index=a.hop_index)
        )
        if nxt.final:
            return
        if nxt.site_id not in plan.run.sites:
            raise PkiError(
                f"coordinator named {nxt.site_id!r} as next, but the plan does not list it"
            )
        try:
            cert = x509.load_pem_x509_certificate(nxt.certificate_pem.encode("ascii"))
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise PkiError(
                f"next site {nxt.site_id!r} presented a certificate not issued by the federation CA"
            ) from exc
        identity = identity_from_certificate(nxt.certificate_pem.encode("ascii"))
        mine = self._tls.identity
        if (identity.federation, identity.kind, identity.name) != (
            mine.federation,
            "site",
            nxt.site_id,
        ):
            raise PkiError(
                f"next site's certificate names {identity.spiffe_id}, not site {nxt.site_id!r}"
            )

    def _report(self, a: site_pb2.Assignment, stage: str, metrics: dict[str, float]) -> None:
        self._stub.ReportMetrics(
            site_pb2.ReportMetricsRequest(
                run_id=a.run_id, hop_index=a.hop_index, stage=stage, metrics=metrics
            )
        )

    def _progress_reporter(self, a: site_pb2.Assignment) -> Callable[[int, int, float], None]:
        last = [0.0]

        def report(step: int, total: int, loss: float) -> None:
            now = time.monotonic()
            if step < total and now - last[0] < PROGRESS_INTERVAL_SECONDS:
                return
            last[0] = now
            self._report(
                a, "progress", {"step": float(step), "total_steps": float(total), "loss": loss}
            )

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
