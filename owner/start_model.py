"""Starting a run from a model the owner holds (``baton submit PLAN --start-from FILE``):
typically the newest hop of a failed run that the owner's escrow opens (``baton fetch RUN
OUT --hop escrow``), so that training continues where that run stopped.

The plan pins the file by its SHA-256 (``[model] start_from``), and the owner signs the
plan; the file itself is sealed here by the owner, as hop 0 of the new run, to every site
of the plan (whichever the ordering strategy puts first can open it), and uploaded with
the run. The coordinator only relays it; the first site checks the owner's signature and
the file's hash against the pin before it trains.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Final

from baton.errors import ConfigError
from baton.ml.codec import load_state_file, schema_hash
from baton.plan import parse_plan
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.manifest import MAX_RECIPIENTS
from baton.security.sealing import AppKeys, check_owner, plan_hash, sign_plan
from baton.v1 import admin_pb2
from baton.wire.channel import sha256_file
from owner.client import AdminClient
from owner.fetch import site_keys

START_TTL_SECONDS: Final = 30 * 24 * 3600
"""How long the sealed start model stays acceptable: hop 0 may start long after submit."""


def file_sha256(path: Path) -> str:
    """``sha256:`` and the hex SHA-256 of the file at ``path``, as a plan pins it."""
    try:
        return f"sha256:{sha256_file(path)}"
    except OSError as exc:
        raise ConfigError(f"cannot read the start model {path}: {exc.strerror or exc}") from None


def check_start_from(plan_toml: str, model: Path | None, *, source: str) -> None:
    """Refuses a start model the plan does not pin, a pin without a start model, and a
    file whose hash is not the pinned one (both named).

    Raises:
        ConfigError: Any of these.
    """
    pinned = parse_plan(plan_toml, source=source).model.start_from
    if model is None and pinned:
        raise ConfigError(
            f"{source} pins a start model ([model] start_from = {pinned!r}): name its file "
            "with --start-from"
        )
    if model is None:
        return
    actual = file_sha256(model)
    if not pinned:
        raise ConfigError(
            f"--start-from {model}: {source} pins no start model; add [model] start_from = "
            f"{actual!r} to it (the plan you sign names the model)"
        )
    if actual != pinned:
        raise ConfigError(
            f"--start-from {model} has SHA-256 {actual}, but {source} pins "
            f"{pinned} ([model] start_from)"
        )


def submit_from_model(
    client: AdminClient, plan_toml: str, model: Path, *, owner: AppKeys, ca_pem: bytes
) -> admin_pb2.Run:
    """Seals ``model`` as hop 0 of a new run of ``plan_toml`` to every site of the plan,
    and submits the run with it.

    Raises:
        ConfigError: The plan does not pin ``model`` (see :func:`check_start_from`), or
            names more sites than a model can be sealed to.
        PkiError: The owner's or a site's certificates do not verify, or a site of the
            plan is not registered.
        ModelError: ``model`` is not a safetensors model file.
    """
    check_start_from(plan_toml, model, source="the run plan")
    plan = parse_plan(plan_toml, source="the run plan")
    if len(plan.run.sites) > MAX_RECIPIENTS:
        raise ConfigError(
            f"a start model is sealed to every site of the plan, at most {MAX_RECIPIENTS}; "
            f"the plan names {len(plan.run.sites)}"
        )
    me = check_owner(ca_pem, owner.signing_cert_pem, owner.encryption_cert_pem).identity
    registered = {s.site_id: s for s in client.list_sites()}
    recipients = [
        RecipientKey(spiffe_id=keys.identity.spiffe_id, public_key=keys.encryption_key)
        for keys in (
            site_keys(ca_pem, registered, s, federation=me.federation) for s in plan.run.sites
        )
    ]
    digest = plan_hash(plan_toml, sign_plan(plan_toml, owner.signing_key))
    run_id = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="baton-start-") as tmp:
        sealed = Path(tmp) / "start.sealed"
        manifest = seal_file(
            model,
            sealed,
            ctx=HopContext(
                run_id=run_id,
                hop_index=0,
                sender=me.spiffe_id,
                recipient=recipients[0].spiffe_id,
                previous_manifest_hash=digest,
                plan_hash=digest,
                schema_hash=schema_hash(load_state_file(model)),
            ),
            sender_key=owner.signing_key,
            recipients=recipients,
            ttl_seconds=START_TTL_SECONDS,
        )
        return client.create_run_from_model(
            plan_toml, owner, run_id=run_id, manifest=manifest, sealed=sealed
        )
