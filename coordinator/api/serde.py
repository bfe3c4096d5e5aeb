"""Coordinator records to wire messages (the admin and site services' boundary)."""

from __future__ import annotations

from baton.v1 import admin_pb2, common_pb2
from baton.wire.serde import blob_ref_to_proto, capabilities_to_proto, profile_to_proto
from coordinator.store.base import (
    EventKind,
    EventRecord,
    HopRecord,
    HopState,
    RunRecord,
    RunState,
    SiteRecord,
)

_RUN_STATE = {
    RunState.RUNNING: common_pb2.RUN_STATE_RUNNING,
    RunState.SUCCEEDED: common_pb2.RUN_STATE_SUCCEEDED,
    RunState.FAILED: common_pb2.RUN_STATE_FAILED,
    RunState.CANCELLED: common_pb2.RUN_STATE_CANCELLED,
}
_HOP_STATE = {
    HopState.PENDING: common_pb2.HOP_STATE_PENDING,
    HopState.ASSIGNED: common_pb2.HOP_STATE_ASSIGNED,
    HopState.COMPLETED: common_pb2.HOP_STATE_COMPLETED,
    HopState.FAILED: common_pb2.HOP_STATE_FAILED,
}
_EVENT_KIND = {
    EventKind.RUN_CREATED: admin_pb2.EVENT_KIND_RUN_CREATED,
    EventKind.HOP_ASSIGNED: admin_pb2.EVENT_KIND_HOP_ASSIGNED,
    EventKind.HOP_PROGRESS: admin_pb2.EVENT_KIND_HOP_PROGRESS,
    EventKind.HOP_COMPLETED: admin_pb2.EVENT_KIND_HOP_COMPLETED,
    EventKind.HOP_FAILED: admin_pb2.EVENT_KIND_HOP_FAILED,
    EventKind.RUN_SUCCEEDED: admin_pb2.EVENT_KIND_RUN_SUCCEEDED,
    EventKind.RUN_FAILED: admin_pb2.EVENT_KIND_RUN_FAILED,
    EventKind.RUN_CANCELLED: admin_pb2.EVENT_KIND_RUN_CANCELLED,
    EventKind.SITE_EVALUATED: admin_pb2.EVENT_KIND_SITE_EVALUATED,
    EventKind.FAULT: admin_pb2.EVENT_KIND_FAULT,
}


def hop_to_proto(hop: HopRecord) -> common_pb2.Hop:
    return common_pb2.Hop(
        hop_index=hop.hop_index,
        cycle=hop.cycle,
        site_id=hop.site_id,
        state=_HOP_STATE[hop.state],
        input=blob_ref_to_proto(hop.input),
        output=blob_ref_to_proto(hop.output),
        metrics_before=hop.metrics_before,
        metrics_after=hop.metrics_after,
        num_examples=hop.num_examples,
        train_seconds=hop.train_seconds,
        error=hop.error,
        output_manifest=hop.output_manifest,
    )


def run_to_proto(run: RunRecord, hops: list[HopRecord] | None = None) -> admin_pb2.Run:
    return admin_pb2.Run(
        run_id=run.run_id,
        name=run.name,
        state=_RUN_STATE[run.state],
        cycles=run.cycles,
        sites=list(run.sites),
        strategy=run.strategy,
        hops=[hop_to_proto(h) for h in hops or []],
        plan_toml=run.plan_toml if hops is not None else "",
        plan_signature=run.plan_signature if hops is not None else b"",
        error=run.error,
        result=blob_ref_to_proto(run.result),
        created_unix_ms=run.created_ms,
        total_hops=run.total_hops,
    )


def event_to_proto(event: EventRecord) -> admin_pb2.RunEvent:
    return admin_pb2.RunEvent(
        seq=event.seq,
        run_id=event.run_id,
        kind=_EVENT_KIND[event.kind],
        time_unix_ms=event.time_ms,
        hop_index=event.hop_index,
        site_id=event.site_id,
        message=event.message,
        metrics=event.metrics,
    )


def site_to_proto(site: SiteRecord, *, online: bool) -> admin_pb2.Site:
    return admin_pb2.Site(
        site_id=site.site_id,
        online=online,
        last_seen_unix_ms=site.last_seen_ms,
        capabilities=capabilities_to_proto(site.capabilities),
        profile=profile_to_proto(site.profile),
        signing_certificate_pem=site.signing_certificate_pem,
        encryption_certificate_pem=site.encryption_certificate_pem,
        software_version=site.software_version,
    )
