"""``baton submit PLAN --start-from MODEL``: a new run continues from a model the owner
fetched from a failed run's escrow (``baton fetch RUN OUT --hop N``).

Real coordinator (in process, real gRPC and mTLS, SQLite and blob files), real site hop
runners training real models, the real ``baton`` command.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from baton import exit_codes
from baton.errors import ConfigError
from baton.ml.codec import save_state_file
from baton.ml.models import plan_model
from baton.ml.trainer import evaluate
from baton.plan import parse_plan
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.sealing import plan_hash
from baton.v1 import common_pb2, site_pb2
from owner.fetch_hop import fetch_hop
from owner.start_model import file_sha256, submit_from_model
from tests.conftest import LiveCoordinator
from tests.integration.sites import Sites, create_request, next_hop, plan
from tests.integration.test_fetch_hop import ESCROW, _admin_toml, _baton, _beating, _client, _said


def _pinned(text: str, pin: str) -> str:
    """``text`` with ``[model] start_from = pin``."""
    assert text.count('name = "logreg"\n') == 1
    return text.replace('name = "logreg"\n', f'name = "logreg"\nstart_from = "{pin}"\n')


def test_a_run_submitted_from_an_escrowed_hop_trains_on_from_its_weights(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    owner, ca_pem = coordinator.pki.keys("owner"), coordinator.pki.ca_pem
    admin = _admin_toml(coordinator, tmp_path)
    runners = {s: sites.runner(s) for s in ("site-a", "site-b")}
    text = plan(["site-a", "site-b"], 2) + ESCROW
    with _beating(coordinator, "site-a", "site-b"), _client(coordinator) as client:
        failed = coordinator.admin().CreateRun(create_request(coordinator.pki, text)).run.run_id
        for site in ("site-a", "site-b", "site-a"):  # hops 1 to 3; hop 3 trains on hop 2's model
            assert runners[site].run(next_hop(sites.stubs[site]))
        client.cancel_run(failed, "site-b is gone")
        model = tmp_path / "hop2.safetensors"
        fetch_hop(client, failed, 2, model, owner=owner, ca_pem=ca_pem)
        pin = file_sha256(model)

        unpinned, pinned, wrong = (tmp_path / f"{n}.toml" for n in ("unpinned", "pinned", "wrong"))
        unpinned.write_text(plan(["site-a", "site-b"]))
        pinned.write_text(_pinned(plan(["site-a", "site-b"]), pin))
        wrong.write_text(_pinned(plan(["site-a", "site-b"]), "sha256:" + "0" * 64))
        refused = _baton(admin, "submit", str(unpinned), "--start-from", str(model))
        assert refused.exit_code == exit_codes.CLI_CONFIG
        assert f"pins no start model; add [model] start_from = '{pin}'" in _said(refused)
        refused = _baton(admin, "submit", str(wrong), "--start-from", str(model))
        assert refused.exit_code == exit_codes.CLI_CONFIG
        assert f"has SHA-256 {pin}, but {wrong} pins sha256:{'0' * 64}" in _said(refused)
        refused = _baton(admin, "submit", str(pinned))
        assert refused.exit_code == exit_codes.CLI_CONFIG
        assert f"pins a start model ([model] start_from = '{pin}'): name its file" in _said(refused)
        assert len(client.list_runs()) == 1

        done = _baton(admin, "submit", str(pinned), "--start-from", str(model))
        assert done.exit_code == 0, done.output
        found = re.fullmatch(r"run ([0-9a-f]{32}) created \(2 hops\)", _said(done))
        assert found, done.output
        run_id = found.group(1)
        first = next_hop(sites.stubs["site-a"])
        assert (first.run_id, first.hop_index, first.input is not None) == (run_id, 0, True)
        assert runners["site-a"].run(first)
        assert runners["site-b"].run(next_hop(sites.stubs["site-b"]))

        run, old = client.get_run(run_id), client.get_run(failed)
        assert run.state == common_pb2.RUN_STATE_SUCCEEDED
        # Site-a scores the model it starts from before training it: the new run's hop 1
        # scores exactly what the failed run's hop 3 scored (hop 2's model), not the
        # model built from the seed that the failed run's hop 1 scored.
        assert dict(run.hops[0].metrics_before) == dict(old.hops[2].metrics_before)
        assert dict(run.hops[0].metrics_before) != dict(old.hops[0].metrics_before)

    verified = _baton(admin, "verify-run", run_id)
    assert verified.exit_code == 0, verified.output
    assert _said(verified).endswith(f"run {run_id}: 2 hops verified, chain intact")


def _seal(
    coordinator: LiveCoordinator, text: str, model: Path, run_id: str, to: tuple[str, ...]
) -> tuple[bytes, Path]:
    """``model`` sealed by the owner as hop 0 of ``run_id`` under the signed ``text``."""
    pki = coordinator.pki
    digest = plan_hash(text, create_request(pki, text).plan_signature)
    sealed = model.with_suffix(".sealed")
    manifest = seal_file(
        model,
        sealed,
        ctx=HopContext(
            run_id=run_id,
            hop_index=0,
            sender=pki.identity("owner").spiffe_id,
            recipient=pki.identity(to[0]).spiffe_id,
            previous_manifest_hash=digest,
            plan_hash=digest,
            schema_hash="0" * 64,
        ),
        sender_key=pki.keys("owner").signing_key,
        recipients=[
            RecipientKey(
                spiffe_id=pki.identity(s).spiffe_id,
                public_key=pki.keys(s).encryption_key.public_key(),
            )
            for s in to
        ],
    )
    return manifest, sealed


def test_the_coordinator_refuses_a_start_model_that_does_not_fit_the_run(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights of a model; the coordinator never opens them")
    pinned = _pinned(plan(["site-a", "site-b"]), file_sha256(model))
    run_id, both = "ab" * 16, ("site-a", "site-b")
    owner = coordinator.pki.keys("owner")
    with _client(coordinator) as client:
        with pytest.raises(ConfigError) as err:
            client.create_run(pinned, owner)
        assert err.value.message == (
            "cannot create the run: the run plan pins a start model ([model] start_from = "
            f"'{file_sha256(model)}') but none came with it: submit it with `baton submit "
            "PLAN --start-from MODEL_FILE`"
        )
        cases = [
            (plan(["site-a", "site-b"]), run_id, both, "a start model came with a run plan "
             "that pins none ([model] start_from)"),
            (pinned, "cd" * 16, both, "the start model's manifest is refused: it is not sealed "
             "by the plan's signer as hop 1 of this run"),
            (pinned, run_id, ("site-a",), "the start model's manifest is refused: it is not "
             "sealed to every site of the plan (not to site-b)"),
        ]  # fmt: skip
        for text, sealed_for, to, message in cases:
            manifest, sealed = _seal(coordinator, text, model, sealed_for, to)
            with pytest.raises(ConfigError) as err:
                client.create_run_from_model(
                    text, owner, run_id=run_id, manifest=manifest, sealed=sealed
                )
            assert err.value.message == f"cannot create the run with its start model: {message}"
        assert client.list_runs() == []


def _start_model_file(tmp_path: Path, sites: Sites, text: str) -> tuple[Path, torch.nn.Module]:
    """A model file for the plan ``text`` whose weights no seed builds."""
    start = plan_model(parse_plan(text), sites.fed.schema)
    with torch.no_grad():
        for tensor in start.parameters():
            tensor.add_(0.25)
    model = tmp_path / "start.safetensors"
    save_state_file(model, {k: v.clone() for k, v in start.state_dict().items()})
    return model, start


def test_a_corrupt_start_model_fails_its_run_before_anyone_downloads_it(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    base = plan(["site-a", "site-b"])
    model, _ = _start_model_file(tmp_path, sites, base)
    text = _pinned(base, file_sha256(model))
    owner, ca_pem = coordinator.pki.keys("owner"), coordinator.pki.ca_pem
    server = coordinator.server
    with _client(coordinator) as client:
        run_id = submit_from_model(client, text, model, owner=owner, ca_pem=ca_pem).run_id
        assert server.verifier.sweep().corrupt == 0
        start = server.store.get_run(run_id).start_model
        assert start is not None
        stored = server.blobs._blob_path(start.blob_id)
        data = bytearray(stored.read_bytes())
        data[100] ^= 1  # a failing disk: same length, other bytes
        stored.write_bytes(bytes(data))

        report = server.verifier.sweep()

        assert (report.checked, report.corrupt, report.resealed) == (1, 1, 0)
        run = client.get_run(run_id)
        assert run.state == common_pb2.RUN_STATE_FAILED
        assert run.error == (
            "the coordinator's copy of the start model fails its SHA-256 check: only the "
            "study owner can seal it again (submit the run again with `baton submit PLAN "
            "--start-from MODEL`)"
        )


def test_a_first_site_lost_hands_the_start_model_to_the_next_under_skip(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    """Hop 1 of a run with a start model fails at site-a for good; the plan's skip policy
    gives hop 1 to site-b, which opens the same start model (sealed to every site of the
    plan) and trains on from it: it scores exactly that model before training."""
    base = plan(["site-a", "site-b"]) + '\n[faults]\non_failed_hop = "skip"\n'
    model, start = _start_model_file(tmp_path, sites, base)
    text = _pinned(base, file_sha256(model))
    owner, ca_pem = coordinator.pki.keys("owner"), coordinator.pki.ca_pem
    with _beating(coordinator, "site-a", "site-b"), _client(coordinator) as client:
        run_id = submit_from_model(client, text, model, owner=owner, ca_pem=ca_pem).run_id
        first = next_hop(sites.stubs["site-a"])
        assert (first.run_id, first.hop_index, first.input is not None) == (run_id, 0, True)
        sites.stubs["site-a"].FailHop(
            site_pb2.FailHopRequest(
                run_id=run_id, hop_index=0, reason="data_error", message="its data is gone"
            )
        )

        again = next_hop(sites.stubs["site-b"])
        assert (again.run_id, again.hop_index) == (run_id, 0)
        assert (again.input, again.input_manifest) == (first.input, first.input_manifest)
        assert sites.runner("site-b").run(again)

        run = client.get_run(run_id)
        assert run.state == common_pb2.RUN_STATE_SUCCEEDED, run.error
        assert [(h.hop_index, h.site_id) for h in run.hops] == [(0, "site-b")]
        expected = evaluate(start, sites.fed.sites["site-b"].val)
        assert dict(run.hops[0].metrics_before) == pytest.approx(expected)
