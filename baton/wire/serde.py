"""Conversions between shared domain types and wire messages (``x_to_proto`` / ``x_from_proto``)."""

from __future__ import annotations

from baton.domain import (
    Assignment,
    BlobRef,
    Capabilities,
    DataProfile,
    Device,
    Evaluator,
    NextHop,
)
from baton.v1 import common_pb2, site_pb2


def blob_ref_to_proto(ref: BlobRef | None) -> common_pb2.BlobRef:
    """An unset reference becomes the empty message."""
    if ref is None:
        return common_pb2.BlobRef()
    return common_pb2.BlobRef(blob_id=ref.blob_id, size=ref.size)


def blob_ref_from_proto(msg: common_pb2.BlobRef) -> BlobRef | None:
    """The empty message (no blob id) becomes None."""
    if not msg.blob_id:
        return None
    return BlobRef(blob_id=msg.blob_id, size=msg.size)


def capabilities_to_proto(caps: Capabilities) -> common_pb2.SiteCapabilities:
    return common_pb2.SiteCapabilities(
        cpu_count=caps.cpu_count,
        memory_bytes=caps.memory_bytes,
        devices=[
            common_pb2.Device(kind=d.kind, name=d.name, memory_bytes=d.memory_bytes)
            for d in caps.devices
        ],
    )


def capabilities_from_proto(msg: common_pb2.SiteCapabilities) -> Capabilities:
    return Capabilities(
        cpu_count=msg.cpu_count,
        memory_bytes=msg.memory_bytes,
        devices=tuple(
            Device(kind=d.kind, name=d.name, memory_bytes=d.memory_bytes) for d in msg.devices
        ),
    )


def profile_to_proto(profile: DataProfile) -> common_pb2.DataProfile:
    return common_pb2.DataProfile(
        num_examples=profile.num_examples,
        label_histogram=list(profile.label_histogram),
        schema_hash=profile.schema_hash,
        task=profile.task,
    )


def profile_from_proto(msg: common_pb2.DataProfile) -> DataProfile:
    return DataProfile(
        num_examples=msg.num_examples,
        label_histogram=tuple(msg.label_histogram),
        schema_hash=msg.schema_hash,
        task=msg.task,
    )


def next_hop_to_proto(nxt: NextHop) -> site_pb2.NextHop:
    return site_pb2.NextHop(
        final=nxt.final,
        site_id=nxt.site_id,
        hop_index=nxt.hop_index,
        certificate_pem=nxt.certificate_pem,
        signing_certificate_pem=nxt.signing_certificate_pem,
        encryption_certificate_pem=nxt.encryption_certificate_pem,
        evaluators=[
            site_pb2.Evaluator(
                site_id=e.site_id,
                signing_certificate_pem=e.signing_certificate_pem,
                encryption_certificate_pem=e.encryption_certificate_pem,
            )
            for e in nxt.evaluators
        ],
    )


def next_hop_from_proto(msg: site_pb2.NextHop) -> NextHop:
    return NextHop(
        final=msg.final,
        site_id=msg.site_id,
        hop_index=msg.hop_index,
        certificate_pem=msg.certificate_pem,
        signing_certificate_pem=msg.signing_certificate_pem,
        encryption_certificate_pem=msg.encryption_certificate_pem,
        evaluators=tuple(
            Evaluator(
                site_id=e.site_id,
                signing_certificate_pem=e.signing_certificate_pem,
                encryption_certificate_pem=e.encryption_certificate_pem,
            )
            for e in msg.evaluators
        ),
    )


def assignment_to_proto(a: Assignment) -> site_pb2.Assignment:
    msg = site_pb2.Assignment(
        run_id=a.run_id,
        hop_index=a.hop_index,
        cycle=a.cycle,
        total_hops=a.total_hops,
        plan_toml=a.plan_toml,
        input=blob_ref_to_proto(a.input),
        previous_site_id=a.previous_site_id,
        plan_signature=a.plan_signature,
        owner_signing_certificate_pem=a.owner_signing_certificate_pem,
        owner_encryption_certificate_pem=a.owner_encryption_certificate_pem,
        input_manifest=a.input_manifest,
        previous_manifest=a.previous_manifest,
        sender_signing_certificate_pem=a.sender_signing_certificate_pem,
        sender_encryption_certificate_pem=a.sender_encryption_certificate_pem,
        evaluate_only=a.evaluate_only,
    )
    if a.next_hop is not None:
        msg.next_hop.CopyFrom(next_hop_to_proto(a.next_hop))
    return msg


def assignment_from_proto(msg: site_pb2.Assignment) -> Assignment:
    return Assignment(
        run_id=msg.run_id,
        hop_index=msg.hop_index,
        cycle=msg.cycle,
        total_hops=msg.total_hops,
        plan_toml=msg.plan_toml,
        input=blob_ref_from_proto(msg.input),
        previous_site_id=msg.previous_site_id,
        plan_signature=msg.plan_signature,
        owner_signing_certificate_pem=msg.owner_signing_certificate_pem,
        owner_encryption_certificate_pem=msg.owner_encryption_certificate_pem,
        input_manifest=msg.input_manifest,
        previous_manifest=msg.previous_manifest,
        sender_signing_certificate_pem=msg.sender_signing_certificate_pem,
        sender_encryption_certificate_pem=msg.sender_encryption_certificate_pem,
        evaluate_only=msg.evaluate_only,
        next_hop=next_hop_from_proto(msg.next_hop) if msg.HasField("next_hop") else None,
    )
