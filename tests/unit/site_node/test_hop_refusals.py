"""A hop at a site refuses what it must, before training where it can: a tampered or
misaddressed input, a forged plan, another task, a missing, revoked or unvouched recipient,
a revoked sender; the coordinator learns only the category."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from baton.domain import Assignment, NextHop
from baton.security.revocation import revocation_check, revoke
from site_node.fake_client import FakeCoordinatorClient
from tests.unit.site_node.hop_world import (
    RUN,
    SCHEMA,
    World,
    hop1,
    leftovers,
    methods,
    plan,
)


def _refused(world: World, client: FakeCoordinatorClient, site: str) -> dict[str, object]:
    """Checks that ``site`` reported the hop failed, handed nothing on and left no
    plaintext; returns the failure report."""
    [failed] = client.calls_to("fail_hop")
    assert not client.calls_to("upload")
    assert not client.calls_to("complete_hop")
    assert leftovers(world, site, "*.safetensors") == []
    assert leftovers(world, site, "sealed") == []
    last = world.events(site)[-1]
    assert last["event"] == "hop_rejected"
    assert last["detail"]["reason"] == failed.args["reason"]
    return dict(failed.args)


def _flip_a_byte(world: World, a: Assignment, c: FakeCoordinatorClient) -> Assignment:
    assert a.input is not None
    data = bytearray(c.blobs[a.input.blob_id])
    data[len(data) // 2] ^= 1
    return replace(a, input=c.put_blob(bytes(data)))  # the relay re-hashes what it serves


def _sealed_to_another_site(world: World, a: Assignment, c: FakeCoordinatorClient) -> Assignment:
    a0 = replace(world.signed(a.plan_toml), next_hop=world.site("site-c", 1))
    other = FakeCoordinatorClient()
    assert world.runner("site-a", other).run(a0)
    c.blobs.update(other.blobs)
    return world.after(a0, other.completed[0], sender="site-a", nxt=a.next_hop)


def _signed_by_another_site(world: World, a: Assignment, c: FakeCoordinatorClient) -> Assignment:
    keys = world.pki.keys("site-c")
    return replace(
        a,
        previous_site_id="site-c",
        sender_signing_certificate_pem=keys.signing_cert_pem.decode(),
        sender_encryption_certificate_pem=keys.encryption_cert_pem.decode(),
    )


def _chained_elsewhere(world: World, a: Assignment, c: FakeCoordinatorClient) -> Assignment:
    return replace(a, previous_manifest=a.input_manifest)


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        (_flip_a_byte, "chunk_hash"),
        (_sealed_to_another_site, "wrong_recipient"),
        (_signed_by_another_site, "bad_signature"),
        (_chained_elsewhere, "broken_chain"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else v,
)
def test_a_tampered_or_misaddressed_input_is_refused_before_training(
    world: World,
    tamper: Callable[[World, Assignment, FakeCoordinatorClient], Assignment],
    check: str,
) -> None:
    _, honest, client = hop1(world)
    a1 = tamper(world, honest, client)

    assert not world.runner("site-b", client).run(a1)

    # The coordinator learns the category; the check that failed stays in the site's log.
    assert _refused(world, client, "site-b") == {
        "run_id": RUN,
        "hop_index": 1,
        "reason": "rejected_hop",
        "message": "",
    }
    assert world.events("site-b")[-1]["detail"]["check"] == check
    assert not client.calls_to("report_metrics")


def _unsigned(world: World, a: Assignment) -> Assignment:
    return replace(a, plan_signature=b"")


def _edited(world: World, a: Assignment) -> Assignment:
    return replace(a, plan_toml=a.plan_toml.replace("local_steps = 4", "local_steps = 400"))


def _signed_with_another_key(world: World, a: Assignment) -> Assignment:
    return replace(a, plan_signature=world.pki.signed_plan(a.plan_toml, owner="site-c").signature)


def _signed_by_a_site(world: World, a: Assignment) -> Assignment:
    plan = world.pki.signed_plan(a.plan_toml, owner="site-c")
    return replace(
        a,
        plan_signature=plan.signature,
        owner_signing_certificate_pem=plan.owner_signing_pem,
        owner_encryption_certificate_pem=plan.owner_encryption_pem,
    )


@pytest.mark.parametrize(
    "forge",
    [_unsigned, _edited, _signed_with_another_key, _signed_by_a_site],
    ids=lambda f: f.__name__.strip("_"),
)
def test_an_unsigned_or_wrongly_signed_plan_is_refused(
    world: World, forge: Callable[[World, Assignment], Assignment]
) -> None:
    _, honest, client = hop1(world)

    assert not world.runner("site-b", client).run(forge(world, honest))

    assert _refused(world, client, "site-b")["reason"] == "untrusted_party"
    assert methods(client) == ["fail_hop"]  # nothing fetched, nothing trained
    assert [e["event"] for e in world.events("site-b")] == ["hop_rejected"]


def test_a_plan_for_another_task_is_refused(world: World) -> None:
    text = plan(task="other")
    client = FakeCoordinatorClient()

    assert not world.runner("site-a", client).run(world.signed(text))

    failed = _refused(world, client, "site-a")
    assert failed["reason"] == "data_error"
    assert failed["message"] == f"run {RUN} trains task 'other', but this site holds 'toy'"
    assert methods(client) == ["fail_hop"]


def test_a_model_trained_on_another_data_schema_is_refused(world: World) -> None:
    permuted = replace(SCHEMA, feature_names=("f1", "f0", "f2", "f3"))  # same width
    a0 = world.signed(plan())
    c0 = FakeCoordinatorClient()
    assert world.runner("site-a", c0, schema=permuted).run(a0)
    client = FakeCoordinatorClient()
    client.blobs.update(c0.blobs)
    a1 = world.after(a0, c0.completed[0], sender="site-a", nxt=world.owner(2))

    assert not world.runner("site-b", client).run(a1)

    failed = _refused(world, client, "site-b")
    assert failed["reason"] == "data_error"
    assert failed["message"] == (
        f"hop 1 of run {RUN}: the incoming model was trained on data schema "
        f"{permuted.schema_hash()[:12]} (at site-a), this site holds "
        f"{SCHEMA.schema_hash()[:12]}: the sites' feature columns or classes differ"
    )
    assert methods(client) == ["download", "fail_hop"]  # opened, never trained


def test_a_hop_without_a_recipient_is_refused_before_anything_is_fetched(world: World) -> None:
    _, a1, client = hop1(world)

    assert not world.runner("site-b", client).run(replace(a1, next_hop=None))

    assert methods(client) == ["fail_hop"]
    failed = _refused(world, client, "site-b")
    assert failed["reason"] == "site_error"
    assert "names no recipient (next_hop)" in str(failed["message"])


def _revoked(world: World, site: str) -> Callable[[bytes | str], bool]:
    crl = world.tmp / "crl.pem"
    revoke(world.pki.root / "ca", crl, world.pki.keys(site).signing_cert_pem)
    return revocation_check(crl, world.pki.ca_pem)


def test_a_revoked_recipient_gets_nothing(world: World) -> None:
    """The site checks the recipient the coordinator names against its own CRL."""
    client = FakeCoordinatorClient()
    runner = world.runner("site-a", client, revoked=_revoked(world, "site-b"))

    assert not runner.run(world.signed(plan()))

    assert _refused(world, client, "site-a")["reason"] == "untrusted_party"
    assert not client.blobs


def test_a_model_from_a_revoked_sender_is_refused(world: World) -> None:
    _, a1, client = hop1(world)
    runner = world.runner("site-b", client, revoked=_revoked(world, "site-a"))

    assert not runner.run(a1)

    assert _refused(world, client, "site-b")["reason"] == "untrusted_party"
    assert not client.calls_to("download")


@pytest.mark.parametrize(
    "nxt",
    [
        lambda w: replace(w.site("site-c", 2), site_id="site-x"),  # not in the signed plan
        lambda w: replace(w.site("site-c", 2), final=True),  # a site posing as the owner
        lambda w: replace(
            w.site("site-c", 2), signing_certificate_pem=w.site("site-b", 2).signing_certificate_pem
        ),
    ],
    ids=["outside-the-plan", "site-as-final", "someone-elses-certificate"],
)
def test_the_model_is_sealed_to_no_party_the_plan_and_ca_do_not_vouch_for(
    world: World, nxt: Callable[[World], NextHop]
) -> None:
    _, a1, client = hop1(world)

    assert not world.runner("site-b", client).run(replace(a1, next_hop=nxt(world)))

    assert _refused(world, client, "site-b")["reason"] == "untrusted_party"
