"""A run's start model: the model hop 0 starts from when the plan pins one
(``[model] start_from``), sealed by the study owner to every site of the plan and
uploaded with the run (``CreateRunFromModel``).

The coordinator cannot open it; it checks what anyone holding the owner's public key can:
the manifest is the owner's, for this run's hop 0, chained to this plan, wraps a key to
every site of the plan, and names the stored blob. The site that trains hop 0 checks the
rest (its key, the plaintext's hash against the plan's pin).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from baton.domain import BlobRef
from baton.errors import ConfigError
from baton.plan import RunPlan
from baton.security.identity import Identity
from baton.security.keys import PartyKeys
from baton.security.manifest import MAX_MANIFEST_BYTES, verify_manifest

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
"""A run id the owner chooses for a run with a start model (as the coordinator's own)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StartModel:
    """A start model as the owner sends it with a run."""

    run_id: str
    """The run's id, chosen by the owner: the model is sealed for it."""
    blob: BlobRef
    """The sealed model (declared before it is stored, then stored)."""
    manifest: bytes
    """The owner's signed manifest sealing it as the run's hop 0."""


def check_start_model(
    plan: RunPlan,
    start: StartModel | None,
    *,
    owner: PartyKeys,
    plan_digest: str,
    stored: Callable[[str], bool],
) -> None:
    """Checks that a start model came exactly when ``plan`` pins one, and that its signed
    manifest is ``owner``'s, for hop 0 of its run under this plan, sealed to every site of
    the plan and naming ``start.blob``, which the blob store holds (``stored``).

    Raises:
        ConfigError: The plan pins a start model and none came, or one came unpinned, or
            the run id is not 32 lower-case hex digits.
            Or the manifest is not for this run, plan, its sites or blob.
        SealError: The manifest is not signed by the owner (``bad_signature``) or malformed.
    """
    pinned = plan.model.start_from
    if start is None:
        if pinned:
            raise ConfigError(
                f"the run plan pins a start model ([model] start_from = {pinned!r}) but none "
                "came with it: submit it with `baton submit PLAN --start-from MODEL_FILE`"
            )
        return
    if not pinned:
        raise ConfigError("a start model came with a run plan that pins none ([model] start_from)")
    if not RUN_ID_RE.match(start.run_id):
        raise ConfigError("a run's id must be 32 lower-case hex digits")
    m = verify_manifest(start.manifest, sender_key=owner.signing_key, max_bytes=MAX_MANIFEST_BYTES)
    problem = None
    if (m.run_id, m.hop_index, m.sender) != (start.run_id, 0, owner.identity.spiffe_id):
        problem = "it is not sealed by the plan's signer as hop 1 of this run"
    elif m.plan_hash != plan_digest or m.previous_manifest_hash != plan_digest:
        problem = "it is not sealed under this plan"
    elif (m.ciphertext_sha256, m.ciphertext_length) != (start.blob.blob_id, start.blob.size):
        problem = "it names another blob than the one sent"
    else:
        federation = owner.identity.federation
        sealed_to = {k.recipient for k in m.wrapped_keys}
        missing = [
            s
            for s in plan.run.sites
            if Identity(federation=federation, kind="site", name=s).spiffe_id not in sealed_to
        ]
        if missing:
            problem = f"it is not sealed to every site of the plan (not to {', '.join(missing)})"
    if problem is None and not stored(start.blob.blob_id):
        problem = "its blob is not stored"
    if problem:
        raise ConfigError(f"the start model's manifest is refused: {problem}")
