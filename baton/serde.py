"""Conversions between shared domain types and wire messages (``x_to_proto`` / ``x_from_proto``)."""

from __future__ import annotations

from baton.domain import BlobRef, Capabilities, DataProfile, Device
from baton.v1 import common_pb2


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
