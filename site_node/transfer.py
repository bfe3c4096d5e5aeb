"""Resumable, hash-checked blob transfers over gRPC, every attempt under a deadline."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from baton.domain import BlobRef
from baton.errors import BlobError
from baton.security.manifest import HEX64
from baton.v1 import common_pb2, envelope_pb2, site_pb2, site_pb2_grpc
from baton.wire.channel import CHUNK_BYTES, file_chunks, sha256_file
from baton.wire.serde import blob_ref_from_proto
from site_node.retry import Patience

logger = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
"""Failures after which a transfer tries again (within its :class:`Patience`), resuming
where the coordinator's copy (upload) or the site's file (download) ends."""
RPC_TIMEOUT_SECONDS = 30.0
"""Deadline of a unary call (here: asking how much of an upload is stored)."""
STREAM_BASE_SECONDS = 60.0
"""Part of a transfer attempt's deadline that does not depend on its size."""
STREAM_FLOOR_BYTES_PER_SECOND = 256 << 10
"""Slowest link a transfer attempt must finish on; a slower attempt times out and the
next resumes where it stopped."""


def stream_deadline(remaining_bytes: int) -> float:
    """Seconds one transfer attempt of ``remaining_bytes`` may take: a fixed allowance plus
    the time the bytes take at :data:`STREAM_FLOOR_BYTES_PER_SECOND`."""
    return STREAM_BASE_SECONDS + max(0, remaining_bytes) / STREAM_FLOOR_BYTES_PER_SECOND


def download(
    stub: site_pb2_grpc.SiteServiceStub,
    *,
    run_id: str,
    hop_index: int,
    blob: BlobRef,
    dest: Path,
    progress: Callable[[int], None] | None = None,
    patience: Patience | None = None,
) -> None:
    """Downloads a hop's input blob to ``dest``, resuming a partial file, and checks its hash.

    The bytes are hashed as they are written (a partial file's bytes once, when resuming),
    so the file is never read back. ``progress``, if given, learns the file's length once
    the bytes are written to it: at the start (a resumed prefix) and after every chunk; an
    exception it raises stops the download. A lost coordinator is tried again within
    ``patience`` (default: :class:`site_node.retry.Patience`), from the file's end.

    Raises:
        BlobError: the stream is out of order or too long, or the bytes do not match ``blob``.
        grpc.RpcError: the coordinator refused or stayed unreachable.
    """
    offset = dest.stat().st_size if dest.exists() else 0
    if offset > blob.size:
        dest.unlink()
        offset = 0
    sha = _hash_prefix(dest, offset)
    if offset:
        logger.info("download resumes at byte %d of %d: the kept file", offset, blob.size)
    if progress is not None:
        progress(offset)
    patience = patience or Patience()
    while True:
        start = offset
        try:
            with dest.open("ab") as f:
                stream = stub.DownloadBlob(
                    site_pb2.DownloadBlobRequest(run_id=run_id, hop_index=hop_index, offset=offset),
                    timeout=stream_deadline(blob.size - offset),
                )
                for chunk in stream:
                    if chunk.offset != offset:
                        raise BlobError(
                            f"download out of order: chunk at {chunk.offset}, expected {offset}"
                        )
                    if offset + len(chunk.data) > blob.size:
                        raise BlobError(f"download longer than the announced {blob.size} bytes")
                    f.write(chunk.data)
                    sha.update(chunk.data)
                    offset += len(chunk.data)
                    if progress is not None:
                        f.flush()
                        progress(offset)
            break
        except grpc.RpcError as exc:
            if offset > start:
                patience.progressed()
            if not _retryable(exc) or not patience.pause():
                raise
            logger.warning(
                "download interrupted (%s); resuming at byte %d of %d",
                exc.code().name,
                offset,
                blob.size,
            )
    if offset != blob.size:
        raise BlobError(f"download truncated: {offset} of {blob.size} bytes")
    if sha.hexdigest() != blob.blob_id:
        dest.unlink()
        raise BlobError("downloaded model does not match its content hash")


def upload(
    stub: site_pb2_grpc.SiteServiceStub,
    *,
    run_id: str,
    hop_index: int,
    source: Path,
    sha256: str | None = None,
    patience: Patience | None = None,
    manifest: bytes = b"",
) -> BlobRef:
    """Uploads ``source`` as the output of a hop; an interrupted upload resumes where the
    coordinator's durable copy ends.

    Args:
        stub: The coordinator.
        run_id: The run.
        hop_index: The hop whose output this is.
        source: The sealed blob.
        sha256: Its SHA-256 if the caller already knows it (a sealed hop's manifest names
            it), so the file is not read an extra time; the coordinator checks it anyway.
        patience: How long to keep trying a lost coordinator (default:
            :class:`site_node.retry.Patience`). Every try, and every question of how much
            arrived, uses the same transfer id, so the coordinator keeps one partial upload.
            The id follows from the run, the hop and the blob's hash, so a site that was
            restarted (killed mid-upload) resumes that same upload where the coordinator's
            copy ends, or learns that it was stored, and leaves no partial upload behind.
        manifest: The signed manifest sealing ``source``, sent in every header: the
            coordinator checks it before it stores a byte, and may let the recipient start
            downloading while the blob arrives (cut-through). Empty: none is sent.

    Raises:
        grpc.RpcError: the coordinator refused or stayed unreachable.
    """
    size = source.stat().st_size
    sha = sha256_file(source) if sha256 is None else sha256
    transfer_id = upload_transfer_id(run_id, hop_index, sha)
    patience = patience or Patience()
    status = _upload_status(stub, transfer_id, patience)
    if status.complete and (done := blob_ref_from_proto(status.blob)) is not None:
        logger.info("upload %s (hop %d) was stored before", transfer_id, hop_index + 1)
        return _checked(done, sha, size)
    offset = status.committed_offset
    if offset:
        logger.info(
            "upload %s (hop %d) resumes at byte %d of %d, acknowledged before",
            transfer_id,
            hop_index + 1,
            offset,
            size,
        )
    while True:
        header = site_pb2.UploadHeader(
            transfer_id=transfer_id,
            run_id=run_id,
            hop_index=hop_index,
            total_size=size,
            sha256=sha,
            offset=offset,
            manifest=manifest,
        )
        try:
            resp = stub.UploadBlob(
                _requests(header, source, offset), timeout=stream_deadline(size - offset)
            )
        except grpc.RpcError as exc:
            if not _retryable(exc) or not patience.pause():
                raise
            status = _upload_status(stub, transfer_id, patience)
            if status.complete:
                done = blob_ref_from_proto(status.blob)
                if done is not None:
                    return _checked(done, sha, size)
            if status.committed_offset > offset:
                patience.progressed()
            offset = status.committed_offset
            logger.warning(
                "upload interrupted (%s, transfer %s); resuming at byte %d of %d",
                exc.code().name,
                transfer_id,
                offset,
                size,
            )
            continue
        ref = blob_ref_from_proto(resp.blob)
        return _checked(ref, sha, size)


def upload_transfer_id(run_id: str, hop_index: int, sha256: str) -> str:
    """The transfer id of uploading the blob ``sha256`` as hop ``hop_index``'s output: the
    same for every try of that upload, in this process or after a restart."""
    return hashlib.sha256(f"{run_id}/{hop_index}/{sha256}".encode()).hexdigest()


def _checked(ref: BlobRef | None, sha: str, size: int) -> BlobRef:
    if ref is None or ref.blob_id != sha or ref.size != size:
        raise BlobError("coordinator stored a different blob than was sent")
    return ref


def _upload_status(
    stub: site_pb2_grpc.SiteServiceStub, transfer_id: str, patience: Patience
) -> site_pb2.GetUploadStatusResponse:
    """How much of ``transfer_id`` the coordinator stored, asked until it answers or
    ``patience`` runs out (then the last error is raised)."""
    while True:
        try:
            return stub.GetUploadStatus(
                site_pb2.GetUploadStatusRequest(transfer_id=transfer_id),
                timeout=RPC_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            if not _retryable(exc) or not patience.pause():
                raise


def _retryable(exc: grpc.RpcError) -> bool:
    """Whether a failed call may succeed when tried again (the coordinator was out of reach)."""
    return isinstance(exc, grpc.Call) and exc.code() in RETRYABLE


def sealed_sha256(signed: bytes) -> str | None:
    """The blob hash that the SignedManifest ``signed`` names, or None if it names none.

    This reads the sender's own manifest, unverified: the coordinator checks the uploaded
    bytes against the hash anyway, and a receiver checks the signature.
    """
    try:
        inner = envelope_pb2.SignedManifest.FromString(signed).manifest
        named = envelope_pb2.HopManifest.FromString(inner).ciphertext_sha256
    except DecodeError:
        return None
    return named if HEX64.fullmatch(named) else None


def _hash_prefix(path: Path, length: int) -> hashlib._Hash:
    """A SHA-256 over the first ``length`` bytes of ``path`` (none if ``length`` is 0)."""
    sha = hashlib.sha256()
    if length:
        with path.open("rb") as f:
            while length > 0 and (data := f.read(min(CHUNK_BYTES, length))):
                sha.update(data)
                length -= len(data)
    return sha


def _requests(
    header: site_pb2.UploadHeader, source: Path, offset: int
) -> Iterator[site_pb2.UploadBlobRequest]:
    yield site_pb2.UploadBlobRequest(header=header)
    for data in file_chunks(source, offset=offset, chunk_size=CHUNK_BYTES):
        yield site_pb2.UploadBlobRequest(chunk=common_pb2.BlobChunk(offset=offset, data=data))
        offset += len(data)
