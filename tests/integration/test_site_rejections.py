"""A site facing a lying relay: tampered assignments are rejected before any training, the
coordinator learns only the category, and nothing already verified is lost.

Real coordinator (in process, real gRPC and mTLS), real site hop runners, real sealing; the
test plays the malicious relay by editing the assignment a site receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch

from baton.errors import SealError, TransportError
from baton.ml.codec import load_state_file, save_state_file, schema_hash, state_of
from baton.ml.models import build_model
from baton.security.audit import verify_log
from baton.security.revocation import revocation_check, revoke
from baton.security.sealing import plan_hash
from baton.v1 import admin_pb2, common_pb2, site_pb2
from baton.wire.serde import assignment_from_proto
from site_node import transfer
from tests.conftest import LiveCoordinator
from tests.integration.sites import (
    Sites,
    create_request,
    next_assignment,
    next_hop,
    open_as,
    seal_and_complete,
)

PLAN = """
[run]
name = "rejections"
sites = ["site-a", "site-b"]

[model]
name = "logreg"

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"
"""

Tamper = Callable[[site_pb2.Assignment, LiveCoordinator], None]


def _garbage_manifest(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    a.input_manifest = b"\x0a\x03abc"


def _other_sender(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    keys = c.pki.keys("site-c")
    a.previous_site_id = "site-c"
    a.sender_signing_certificate_pem = keys.signing_cert_pem.decode()
    a.sender_encryption_certificate_pem = keys.encryption_cert_pem.decode()


def _edited_plan(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    a.plan_toml = a.plan_toml.replace('strategy = "fixed"', 'strategy = "random"')


def _unsigned_plan(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    a.plan_signature = b""


def _site_as_owner(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    keys = c.pki.keys("site-c")
    a.owner_signing_certificate_pem = keys.signing_cert_pem.decode()
    a.owner_encryption_certificate_pem = keys.encryption_cert_pem.decode()


def _mislabelled_sender(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    a.previous_site_id = "site-c"  # certificates still site-a's


def _chain_from_elsewhere(a: site_pb2.Assignment, c: LiveCoordinator) -> None:
    a.previous_manifest = a.input_manifest  # hop 1 has no predecessor manifest but the plan


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_garbage_manifest, "rejected_hop"),
        (_other_sender, "rejected_hop"),
        (_edited_plan, "untrusted_party"),
        (_unsigned_plan, "untrusted_party"),
        (_site_as_owner, "untrusted_party"),
        (_mislabelled_sender, "untrusted_party"),
        (_chain_from_elsewhere, "rejected_hop"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else v,
)
def test_tampered_assignment_is_rejected_before_training(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    sites: Sites,
    tamper: Tamper,
    reason: str,
) -> None:
    stubs = sites.stubs

    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(stubs["site-a"]))
    honest = next_assignment(stubs["site-b"])
    tampered = site_pb2.Assignment()
    tampered.CopyFrom(honest)
    tamper(tampered, coordinator)

    assert not sites.runner("site-b").run(assignment_from_proto(tampered))

    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_FAILED
    # The coordinator learns the category, not which check failed.
    assert got.error == f"hop 2 at site-b failed: {reason}"
    # Nothing verified is lost: hop 0's sealed model is still in the blob store.
    assert coordinator.server.blobs.exists(got.hops[0].output.blob_id)
    # No plaintext model was left behind, and nothing was trained.
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))
    assert not got.hops[1].metrics_after
    # The site's own signed log records the rejection, and the log verifies.
    log = tmp_path / "site-b.audit.jsonl"
    report = verify_log(log, public_key=coordinator.pki.keys("site-b").signing_key.public_key())
    assert report.ok
    last = json.loads(log.read_text().splitlines()[-1])
    assert (last["event"], last["hop"], last["detail"]["reason"]) == ("hop_rejected", 1, reason)
    events = admin.WatchRun(admin_pb2.WatchRunRequest(run_id=run.run_id), timeout=10)
    assert not [
        e for e in events if e.hop_index == 1 and e.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS
    ]


def test_honest_assignment_is_accepted(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites
) -> None:
    """The control case: the same set-up without tampering completes the run."""
    stubs = sites.stubs
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    for site in ("site-a", "site-b"):
        assert sites.runner(site).run(next_hop(stubs[site]))
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_SUCCEEDED
    assert got.hops[1].metrics_after["accuracy"] > 0.8
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / "site-b.audit.jsonl").read_text().splitlines()
    ]
    assert events == ["plan_accepted", "hop_received", "hop_sent"]


@pytest.mark.parametrize("escrow", [True, False])
def test_escrow_lets_the_owner_open_an_intermediate_hop(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites, escrow: bool
) -> None:
    stubs = sites.stubs
    text = PLAN + f"\n[security]\nescrow_to_owner = {'true' if escrow else 'false'}\n"
    request = create_request(coordinator.pki, text)
    admin = coordinator.admin()
    run = admin.CreateRun(request).run
    assert sites.runner("site-a").run(next_hop(stubs["site-a"]))
    hop0 = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id)).hops[0]
    sealed = tmp_path / "hop0.sealed"
    sealed.write_bytes(b"".join(coordinator.server.blobs.read(hop0.output.blob_id)))
    digest = plan_hash(text, request.plan_signature)

    def owner_opens() -> Path:
        return open_as(
            coordinator,
            "owner",
            sealed,
            hop0.output_manifest,
            sender="site-a",
            run_id=run.run_id,
            hop=0,
            previous=digest,
            plan_digest=digest,
        )

    if escrow:
        state = load_state_file(owner_opens())
        assert set(state) == {
            "input_norm.mean",
            "input_norm.std",
            "input_norm.fitted",
            "linear.weight",
            "linear.bias",
        }
    else:
        with pytest.raises(SealError) as err:
            owner_opens()
        assert err.value.reason == "wrong_recipient"


def test_site_refuses_a_model_from_a_revoked_site(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites
) -> None:
    """The coordinator's CRL may lag (or the coordinator may lie): the site checks its own."""
    stubs = sites.stubs
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(stubs["site-a"]))
    crl = tmp_path / "crl.pem"
    revoke(coordinator.pki.root / "ca", crl, coordinator.pki.keys("site-a").signing_cert_pem)
    b_runner = sites.runner("site-b", revoked=revocation_check(crl, coordinator.pki.ca_pem))
    assert not b_runner.run(next_hop(stubs["site-b"]))
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.error == "hop 2 at site-b failed: untrusted_party"
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))


def _honest_state() -> dict[str, torch.Tensor]:
    model = build_model("logreg", {}, num_features=30, num_classes=2, seed=0)
    return state_of(model)


def _nan(state: dict[str, torch.Tensor]) -> None:
    state["linear.weight"][0, 0] = float("nan")


def _shape(state: dict[str, torch.Tensor]) -> None:
    state["linear.weight"] = torch.zeros(2, 31)


def _dtype(state: dict[str, torch.Tensor]) -> None:
    state["linear.bias"] = state["linear.bias"].double()


def _scaled(state: dict[str, torch.Tensor]) -> None:
    state["linear.weight"] *= 1e9


def _extra(state: dict[str, torch.Tensor]) -> None:
    state["backdoor"] = torch.ones(3)


@pytest.mark.parametrize(
    ("corrupt", "why"),
    [
        (_nan, "tensor 'linear.weight' holds non-finite values"),
        (_shape, "tensor 'linear.weight' has shape [2, 31], the model expects [2, 30]"),
        (_dtype, "tensor 'linear.bias' has dtype torch.float64, the model expects torch.float32"),
        (_scaled, "above the plan's bound 1000"),
        (_extra, "tensor 'backdoor' is not part of the model"),
    ],
    ids=["nan", "shape", "dtype", "scaled", "extra"],
)
def test_a_malicious_sender_cannot_make_a_site_train_bad_weights(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    sites: Sites,
    corrupt: Callable[[dict[str, torch.Tensor]], None],
    why: str,
) -> None:
    """The envelope proves who sent a model, not that it is sane: the receiver checks
    names, shapes, dtypes, finiteness and the plan's norm bound after opening it."""
    text = PLAN + "\n[security]\nmax_weight_norm = 1000.0\n"
    request = create_request(coordinator.pki, text)
    digest = plan_hash(text, request.plan_signature)
    admin = coordinator.admin()
    run = admin.CreateRun(request).run
    next_assignment(sites.stubs["site-a"])  # site-a is assigned hop 0 ...
    state = _honest_state()
    corrupt(state)
    source = tmp_path / "evil.safetensors"
    save_state_file(source, state)
    # ... and seals crafted weights, correctly signed and chained, to site-b.
    seal_and_complete(
        coordinator,
        sites.stubs["site-a"],
        sender="site-a",
        recipient="site-b",
        run_id=run.run_id,
        hop=0,
        source=source,
        previous=digest,
        plan_digest=digest,
        schema=schema_hash(_honest_state()),
    )
    assert not sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.error.startswith("hop 2 at site-b failed: model_error: ")
    assert why in got.error
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))
    last = json.loads((tmp_path / "site-b.audit.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["detail"]["reason"]) == ("hop_rejected", "model_error")


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


def test_a_site_resumes_a_hop_interrupted_after_accepting_its_input(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops during the upload; the coordinator re-delivers the hop and the
    site hands on the output it kept, without opening the input or training again."""
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, PLAN)).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    real_upload = transfer.upload

    def dropped(*args: object, **kwargs: object) -> object:
        raise _Unavailable()

    monkeypatch.setattr(transfer, "upload", dropped)
    with pytest.raises(TransportError):
        sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))
    monkeypatch.setattr(transfer, "upload", real_upload)
    assert sites.runner("site-b").run(next_hop(sites.stubs["site-b"]))
    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_SUCCEEDED
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / "site-b.audit.jsonl").read_text().splitlines()
    ]
    assert events == ["plan_accepted", "hop_received", "hop_sent"]


def _evaluator(c: LiveCoordinator, site: str) -> site_pb2.Evaluator:
    keys = c.pki.keys(site)
    return site_pb2.Evaluator(
        site_id=site,
        signing_certificate_pem=keys.signing_cert_pem.decode(),
        encryption_certificate_pem=keys.encryption_cert_pem.decode(),
    )


@pytest.mark.parametrize(
    ("plan_toml", "extra"),
    [
        (PLAN, "site-a"),  # the signed plan asks for no evaluation
        (
            PLAN.replace(
                'sites = ["site-a", "site-b"]\n',
                'sites = ["site-a", "site-b"]\nevaluate_at_sites = true\n',
            ),
            "site-c",
        ),
    ],
    ids=["plan-asks-none", "site-outside-the-plan"],
)
def test_the_final_model_is_sealed_to_no_party_the_signed_plan_does_not_name(
    coordinator: LiveCoordinator, tmp_path: Path, sites: Sites, plan_toml: str, extra: str
) -> None:
    admin = coordinator.admin()
    run = admin.CreateRun(create_request(coordinator.pki, plan_toml)).run
    assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    # A coordinator that asks the last site to seal the final model to more parties.
    assignment = next_assignment(sites.stubs["site-b"])
    assignment.next_hop.evaluators.append(_evaluator(coordinator, extra))

    assert not sites.runner("site-b").run(assignment_from_proto(assignment))

    got = admin.GetRun(admin_pb2.GetRunRequest(run_id=run.run_id))
    assert got.state == common_pb2.RUN_STATE_FAILED
    assert got.error == "hop 2 at site-b failed: untrusted_party"
    assert not list((tmp_path / "site-b").rglob("*.safetensors"))
    assert not list((tmp_path / "site-b").rglob("sealed"))  # nothing was sealed
