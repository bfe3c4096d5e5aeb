"""Hop 0 from a start model (``[model] start_from``): the site opens the model the study
owner sealed to it, checks its hash against the plan's pin and trains from its weights;
it refuses a missing start model, one the plan does not pin, one not sealed by the owner
and one whose file is not the pinned one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from baton.domain import Assignment
from baton.ml.codec import load_state_file, schema_hash
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.manifest import verify_manifest
from baton.security.sealing import plan_hash
from site_node.fake_client import FakeCoordinatorClient
from tests.conftest import Pki
from tests.unit.site_node.hop_world import RUN, World, hop0, new_world, plan


@pytest.fixture
def later(pki: Pki, tmp_path: Path) -> Iterator[World]:
    """The same parties in a later run (fresh work directories, logs and replay guards)."""
    with new_world(pki, tmp_path / "later") as w:
        (tmp_path / "later").mkdir()
        yield w


def _model(world: World) -> tuple[Path, FakeCoordinatorClient]:
    """site-a's hop 0 from the seed, and the model file site-b opens from its output."""
    a0, c0 = hop0(world)
    world.opened(c0, a0, c0.completed[0], me="site-b", sender="site-a")
    return world.tmp / "site-b-0.safetensors", c0


def _pinned(pin: str) -> str:
    return plan().replace('name = "logreg"\n', f'name = "logreg"\nstart_from = "{pin}"\n')


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _start(
    world: World, text: str, model: Path, *, sealer: str = "owner"
) -> tuple[Assignment, FakeCoordinatorClient]:
    """Hop 0 of a run of ``text`` whose input is ``model``, sealed by ``sealer`` to every
    site of the plan, as ``baton submit --start-from`` seals it."""
    a = world.signed(text)
    digest = plan_hash(a.plan_toml, a.plan_signature)
    pki = world.pki
    sealed = world.tmp / "start.sealed"
    manifest = seal_file(
        model,
        sealed,
        ctx=HopContext(
            run_id=RUN,
            hop_index=0,
            sender=pki.identity(sealer).spiffe_id,
            recipient=pki.identity("site-a").spiffe_id,
            previous_manifest_hash=digest,
            plan_hash=digest,
            schema_hash=schema_hash(load_state_file(model)),
        ),
        sender_key=pki.keys(sealer).signing_key,
        recipients=[
            RecipientKey(
                spiffe_id=pki.identity(s).spiffe_id,
                public_key=pki.keys(s).encryption_key.public_key(),
            )
            for s in ("site-a", "site-b", "site-c")
        ],
    )
    client = FakeCoordinatorClient()
    keys = pki.keys("owner")
    started = replace(
        a,
        input=client.put_blob(sealed.read_bytes()),
        input_manifest=manifest,
        sender_signing_certificate_pem=keys.signing_cert_pem.decode(),
        sender_encryption_certificate_pem=keys.encryption_cert_pem.decode(),
    )
    return started, client


def test_hop_0_trains_from_the_owners_start_model(world: World, later: World) -> None:
    model, seeded = _model(world)
    a, client = _start(later, _pinned(_sha(model)), model)
    assert later.runner("site-a", client).run(a)

    # site-a scores the model before training it: exactly what it scored after training
    # the model the file holds, not the model built from the seed.
    [done], [from_seed] = client.completed, seeded.completed
    assert dict(done.metrics_before) == dict(from_seed.metrics_after)
    assert dict(done.metrics_before) != dict(from_seed.metrics_before)
    received = [e for e in later.events("site-a") if e["event"] == "hop_received"]
    assert [(e["run_id"], e["hop"], e["detail"]["sender"]) for e in received] == [
        (RUN, 0, later.pki.identity("owner").spiffe_id)
    ]
    # Hop 0's output still names the signed plan as its predecessor (the chain rule).
    key = later.pki.keys("site-a").signing_key.public_key()
    manifest = verify_manifest(done.output_manifest, sender_key=key)
    assert manifest.previous_manifest_hash == plan_hash(a.plan_toml, a.plan_signature)

    # Delivered again (a retry), the same start model opens again and the hop completes.
    assert later.runner("site-a", client).run(a)


def _refused(world: World, client: FakeCoordinatorClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """What site-a told the coordinator about the refused hop, and what its log says."""
    [failed] = client.calls_to("fail_hop")
    assert not client.calls_to("complete_hop")
    last = world.events("site-a")[-1]
    assert last["event"] == "hop_rejected"
    return dict(failed.args), last["detail"]


def test_a_start_model_whose_file_is_not_the_pinned_one_is_refused(
    world: World, later: World
) -> None:
    model, _ = _model(world)
    a, client = _start(later, _pinned("sha256:" + "0" * 64), model)
    assert not later.runner("site-a", client).run(a)
    failed, _ = _refused(later, client)
    assert failed == {
        "run_id": RUN,
        "hop_index": 0,
        "reason": "model_error",
        "message": f"the start model of run {RUN} is {_sha(model)}, but its plan pins "
        f"sha256:{'0' * 64} ([model] start_from)",
    }


def test_a_start_model_not_sealed_by_the_plans_owner_is_refused(world: World, later: World) -> None:
    model, _ = _model(world)
    a, client = _start(later, _pinned(_sha(model)), model, sealer="site-c")
    assert not later.runner("site-a", client).run(a)
    failed, logged = _refused(later, client)
    assert (failed["reason"], logged["check"]) == ("rejected_hop", "bad_signature")


def test_hop_0_without_the_pinned_start_model_is_refused(world: World, later: World) -> None:
    model, _ = _model(world)
    a, client = _start(later, _pinned(_sha(model)), model)
    assert not later.runner("site-a", client).run(replace(a, input=None, input_manifest=b""))
    failed, logged = _refused(later, client)
    assert (failed["reason"], logged["check"]) == ("rejected_hop", "wrong_context")
    assert not client.calls_to("download")


def test_hop_0_with_a_model_its_plan_does_not_pin_is_refused(world: World, later: World) -> None:
    model, _ = _model(world)
    a, client = _start(later, _pinned(_sha(model)), model)
    unpinned = later.signed(plan())
    forged = replace(a, plan_toml=unpinned.plan_toml, plan_signature=unpinned.plan_signature)
    assert not later.runner("site-a", client).run(forged)
    failed, logged = _refused(later, client)
    assert (failed["reason"], logged["check"]) == ("rejected_hop", "wrong_context")
    assert not client.calls_to("download")
