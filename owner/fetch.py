"""The study owner's end of a run: open the final model, sealed to the owner by the last site."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from baton.errors import BlobError, ConfigError, ConflictError, PkiError
from baton.security.envelope import Expectation, open_file
from baton.security.identity import Identity
from baton.security.keys import PartyKeys
from baton.security.manifest import HopManifest
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import AppKeys, check_owner, check_party, expected_previous, verify_plan
from baton.v1 import admin_pb2, common_pb2
from baton.wire.channel import sha256_file
from owner.client import AdminClient

MAX_MODEL_BYTES = 64 << 30


def fetch_result(
    client: AdminClient,
    run_id: str,
    dest: Path,
    *,
    owner: AppKeys,
    ca_pem: bytes,
    schema_hash: str | None = None,
) -> HopManifest:
    """Downloads a succeeded run's sealed model and opens it into ``dest`` (safetensors).

    Everything is checked against the owner's own pinned CA, never the coordinator's word:
    the plan is the one the owner signed, the last hop's sender is the site the run says,
    certified by the CA, the chain links the last manifest to the one before, and the model
    was sealed to this owner.

    The ciphertext goes to a directory this call creates (mode 0700, random name) beside
    ``dest``, so nothing planted at a predictable name (a ``.sealed`` or ``.partial``
    symlink) is followed; the model is written to a new temporary file there too and
    renamed onto ``dest`` only once every check passed. A missing parent of ``dest`` is
    created.

    Raises:
        ConfigError: ``dest`` is a directory, or its directory cannot be created or written.
        SealError: The model or its manifest was rejected.
        BlobError: The sealed model received is not the stored blob the run names.
        PkiError: A certificate does not verify against the pinned CA.
        ConflictError: The run has not succeeded.
    """
    run = client.get_run(run_id)
    if run.state != common_pb2.RUN_STATE_SUCCEEDED or not run.hops:
        raise ConflictError(f"run {run_id} has no result yet", run_id=run_id)
    me = check_owner(ca_pem, owner.signing_cert_pem, owner.encryption_cert_pem)
    plan_digest = verify_plan(run.plan_toml, run.plan_signature, me)
    last = run.hops[-1]
    sites = {s.site_id: s for s in client.list_sites()}
    sender = site_keys(ca_pem, sites, last.site_id, federation=me.identity.federation)
    previous = run.hops[-2].output_manifest if len(run.hops) >= 2 else b""
    return open_sealed(
        lambda sealed: client.fetch_sealed_result(run_id, sealed),
        dest,
        last,
        owner=owner,
        me=me.identity.spiffe_id,
        expect=Expectation(
            run_id=run_id,
            hop_index=last.hop_index,
            sender=sender.identity.spiffe_id,
            previous_manifest_hash=expected_previous(plan_digest, previous),
            plan_hash=plan_digest,
            schema_hash=schema_hash,
            max_plaintext_bytes=MAX_MODEL_BYTES,
        ),
        sender_key=sender.signing_key,
    )


def open_sealed(
    download: Callable[[Path], object],
    dest: Path,
    hop: common_pb2.Hop,
    *,
    owner: AppKeys,
    me: str,
    expect: Expectation,
    sender_key: ed25519.Ed25519PublicKey,
) -> HopManifest:
    """Downloads ``hop``'s sealed output with ``download(path)``, checks it is the blob the
    hop names, and opens it with the owner's key into ``dest`` (see :func:`fetch_result`
    for the private directory and the atomic rename).

    Raises:
        ConfigError: ``dest`` is a directory, or its directory cannot be created or written.
        BlobError: The downloaded bytes are not the hop's blob (the coordinator's copy is
            corrupt, or it was damaged on the way).
        SealError: The model or its manifest was rejected.
    """
    work = _private_dir(dest)
    try:
        sealed = work / "hop.sealed"
        download(sealed)
        if sha256_file(sealed) != hop.output.blob_id:
            raise BlobError(
                f"hop {hop.hop_index + 1}'s sealed output as the coordinator sent it fails its "
                f"SHA-256 check (blob {hop.output.blob_id[:16]}): its copy is corrupt",
                run_id=expect.run_id,
                hop=hop.hop_index,
            )
        return open_file(
            sealed,
            dest,
            hop.output_manifest,
            me=me,
            my_key=owner.encryption_key,
            expect=expect,
            sender_key=sender_key,
            replay=MemoryReplayGuard(),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def site_keys(
    ca_pem: bytes, sites: Mapping[str, admin_pb2.Site], site_id: str, *, federation: str
) -> PartyKeys:
    """The certified keys of a registered site, checked against the pinned CA.

    Raises:
        PkiError: The site is not registered, or its certificates do not verify.
    """
    site = sites.get(site_id)
    if site is None:
        raise PkiError(f"site {site_id} is not registered: its certificates cannot be checked")
    return check_party(
        ca_pem,
        site.signing_certificate_pem,
        site.encryption_certificate_pem,
        Identity(federation=federation, kind="site", name=site_id),
    )


def _private_dir(dest: Path) -> Path:
    """A new directory only this process can enter, beside ``dest`` (same file system, so
    the final rename stays atomic); ``dest``'s parent is created if missing."""
    if dest.is_dir():
        raise ConfigError(f"{dest} is a directory; name the model file to write")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".fetch"))
    except OSError as exc:
        raise ConfigError(f"cannot write into {dest.parent}: {exc.strerror}") from None
