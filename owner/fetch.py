"""The study owner's end of a run: open the final model, sealed to the owner by the last site."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from baton.errors import ConfigError, ConflictError
from baton.security.envelope import Expectation, open_file
from baton.security.identity import Identity
from baton.security.manifest import HopManifest
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import AppKeys, check_owner, check_party, expected_previous, verify_plan
from baton.v1 import common_pb2
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
        PkiError: A certificate does not verify against the pinned CA.
        ConflictError: The run has not succeeded.
    """
    run = client.get_run(run_id)
    if run.state != common_pb2.RUN_STATE_SUCCEEDED or not run.hops:
        raise ConflictError(f"run {run_id} has no result yet", run_id=run_id)
    me = check_owner(ca_pem, owner.signing_cert_pem, owner.encryption_cert_pem)
    plan_digest = verify_plan(run.plan_toml, run.plan_signature, me)
    last = run.hops[-1]
    sender_site = {s.site_id: s for s in client.list_sites()}[last.site_id]
    sender = check_party(
        ca_pem,
        sender_site.signing_certificate_pem,
        sender_site.encryption_certificate_pem,
        Identity(federation=me.identity.federation, kind="site", name=last.site_id),
    )
    previous = run.hops[-2].output_manifest if len(run.hops) >= 2 else b""
    work = _private_dir(dest)
    try:
        sealed = work / "result.sealed"
        client.fetch_sealed_result(run_id, sealed)
        return open_file(
            sealed,
            dest,
            last.output_manifest,
            me=me.identity.spiffe_id,
            my_key=owner.encryption_key,
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
            replay=MemoryReplayGuard(),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
