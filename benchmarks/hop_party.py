"""One party of the hop benchmark, as its own process: the sender or the receiver of a hop.

Run by ``hop_bench.py``: ``python benchmarks/hop_party.py send|recv ROOT PORT RUN_ID WORK
[OWN_COPY]``. Prints one JSON line: Unix-time stamps of each stage's end, the peak RSS
above idle and the CPU seconds the party used. ``OWN_COPY`` (sender): when the sender
seals the copy a site keeps sealed to itself (:mod:`site_node.own_copy`): ``beside`` its
upload (as a site does), ``before`` it, or ``none``.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from hop_world import cpu_seconds, dial, identity, reset_peak, rss_mib

from baton.domain import BlobRef
from baton.security.envelope import Expectation, HopContext, RecipientKey, open_file, seal_file
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import AppKeys, expected_previous, plan_hash
from baton.security.streaming import Tail, read_while_written
from baton.v1 import common_pb2, envelope_pb2, site_pb2, site_pb2_grpc
from site_node import transfer


def assignment(stub: site_pb2_grpc.SiteServiceStub, run_id: str) -> site_pb2.Assignment:
    """The site's assignment in ``run_id`` (waits for it)."""
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=900)
    try:
        return next(a for a in stream if a.run_id == run_id)
    finally:
        stream.cancel()


def send(
    root: Path, stub: site_pb2_grpc.SiteServiceStub, run_id: str, work: Path, own_copy: str
) -> dict[str, float]:
    """Seals the model to the next hop, uploads it and completes hop 0; seals the copy a
    site keeps sealed to itself ``own_copy`` (beside the upload, before it, or none)."""
    a = assignment(stub, run_id)
    keys = AppKeys.load(root / "site-a" / "keys")
    cert = x509.load_pem_x509_certificate(a.next_hop.encryption_certificate_pem.encode())
    public = cert.public_key()
    assert isinstance(public, x25519.X25519PublicKey)
    digest = plan_hash(a.plan_toml, a.plan_signature)
    me = identity("site-a").spiffe_id

    def seal(to: str, key: x25519.X25519PublicKey, dest: Path) -> bytes:
        ctx = HopContext(
            run_id=run_id,
            hop_index=0,
            sender=me,
            recipient=to,
            previous_manifest_hash=expected_previous(digest, b""),
            plan_hash=digest,
            schema_hash="0" * 64,
        )
        return seal_file(
            work / "model.bin", dest, ctx=ctx, sender_key=keys.signing_key,
            recipients=[RecipientKey(spiffe_id=to, public_key=key)],
        )  # fmt: skip

    def seal_own() -> bytes:
        return seal(me, keys.encryption_key.public_key(), work / "own.sealed")

    stamps = {"start": time.time()}
    manifest = seal(identity("site-b").spiffe_id, public, work / "out.sealed")
    if own_copy == "before":
        seal_own()
    stamps["seal"] = time.time()
    signed = envelope_pb2.SignedManifest.FromString(manifest)
    blob_sha = envelope_pb2.HopManifest.FromString(signed.manifest).ciphertext_sha256
    with ThreadPoolExecutor(max_workers=1) as pool:
        own: Future[bytes] | None = pool.submit(seal_own) if own_copy == "beside" else None
        ref = transfer.upload(
            stub, run_id=run_id, hop_index=0, source=work / "out.sealed", sha256=blob_sha,
            manifest=manifest,
        )  # fmt: skip
        if own is not None:
            own.result()  # a site completes its hop only once its own copy is kept
    stamps["upload"] = time.time()
    stub.CompleteHop(
        site_pb2.CompleteHopRequest(
            run_id=run_id,
            hop_index=0,
            output=common_pb2.BlobRef(blob_id=ref.blob_id, size=ref.size),
            metrics_before={"accuracy": 0.4},
            metrics_after={"accuracy": 0.5},
            num_examples=10,
            output_manifest=manifest,
        ),
        timeout=60,
    )
    stamps["complete"] = time.time()
    return stamps


def receive(
    root: Path, stub: site_pb2_grpc.SiteServiceStub, run_id: str, work: Path
) -> dict[str, float]:
    """Downloads hop 1's input and verifies and opens it chunk by chunk as it arrives."""
    a = assignment(stub, run_id)
    stamps = {"assigned": time.time()}
    sealed = work / "in.sealed"
    blob = BlobRef(blob_id=a.input.blob_id, size=a.input.size)
    sender = x509.load_pem_x509_certificate(a.sender_signing_certificate_pem.encode())
    sender_key = sender.public_key()
    assert isinstance(sender_key, ed25519.Ed25519PublicKey)
    digest = plan_hash(a.plan_toml, a.plan_signature)

    def fetch(tail: Tail) -> None:
        transfer.download(
            stub, run_id=run_id, hop_index=1, blob=blob, dest=sealed, progress=tail.grew
        )
        stamps["download"] = time.time()

    def unseal(tail: Tail) -> object:
        return open_file(
            tail,
            work / "opened.bin",
            a.input_manifest,
            me=identity("site-b").spiffe_id,
            my_key=AppKeys.load(root / "site-b" / "keys").encryption_key,
            expect=Expectation(
                run_id=run_id,
                hop_index=0,
                sender=identity("site-a").spiffe_id,
                previous_manifest_hash=expected_previous(digest, a.previous_manifest),
                plan_hash=digest,
                max_plaintext_bytes=64 << 30,
            ),
            sender_key=sender_key,
            replay=MemoryReplayGuard(),
        )

    # Opened while it arrives, as a site does (site_node.receive): "open" is what is
    # left of opening once the download ended.
    with Tail(sealed, blob.size, sha256=blob.blob_id) as tail:
        read_while_written(tail, fetch, unseal)
    stamps["open"] = time.time()
    return stamps


def main() -> None:
    """Plays one party; prints its stamps and peak RSS above idle as JSON."""
    role, root, port, run_id, work = sys.argv[1:6]
    own_copy = sys.argv[6] if len(sys.argv) > 6 else "beside"
    site = "site-a" if role == "send" else "site-b"
    stub = site_pb2_grpc.SiteServiceStub(dial(Path(root), site, int(port)))
    idle, cpu = rss_mib(), cpu_seconds()
    reset_peak()
    if role == "send":
        result = send(Path(root), stub, run_id, Path(work), own_copy)
    else:
        result = receive(Path(root), stub, run_id, Path(work))
    result["rss_above_idle_mib"] = rss_mib(field="VmHWM") - idle
    result["cpu_seconds"] = cpu_seconds() - cpu
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
