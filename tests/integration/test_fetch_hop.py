"""``baton fetch RUN --hop N``: the study owner opens one hop's stored output, of a run in
any state, where the owner's escrow (or, for the last hop, the run) seals it to the owner.

Real coordinator (in process, real gRPC and mTLS, SQLite and blob files), real site hop
runners training real models, the real ``baton`` command; the ground truth for a hop is
the same stored blob opened by the site it was sealed to.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from baton import exit_codes
from baton.errors import BlobError, ConflictError, PkiError
from baton.ml.codec import load_state_file
from baton.security.envelope import Expectation
from baton.security.pki import Identity, issue
from baton.security.sealing import expected_previous, plan_hash
from baton.security.tls import TlsFiles
from baton.v1 import admin_pb2, common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result, open_sealed
from owner.fetch_hop import fetch_hop
from tests.conftest import FEDERATION, LiveCoordinator, Pki, live_coordinator
from tests.integration.sites import Sites, create_request, next_hop, open_as, plan, register
from tests.integration.test_site_daemon_faults import _alive

ESCROW = "\n[security]\nescrow_to_owner = true\n"


def _plan(sites: list[str], *, cycles: int = 1, extra: str = "") -> str:
    return plan(sites, cycles) + extra


@contextmanager
def _beating(coordinator: LiveCoordinator, *names: str) -> Iterator[dict[str, ExitStack]]:
    """Keeps the sites ``names`` alive (heartbeats); closing a site's stack stops its."""
    with ExitStack() as all_sites:
        stacks = {n: all_sites.enter_context(ExitStack()) for n in names}
        for name, stack in stacks.items():
            stack.enter_context(_alive(coordinator.site(name)))
        yield stacks


def _admin_toml(coordinator: LiveCoordinator, tmp_path: Path) -> Path:
    """The study owner's ``--admin`` config for this coordinator."""
    files, keys = coordinator.pki.files("owner"), coordinator.pki.root / "owner" / "keys"
    path = tmp_path / "admin.toml"
    path.write_text(
        f'coordinator = "{coordinator.target}"\nkeys_dir = "{keys}"\n'
        f'[tls]\nca = "{files.ca}"\ncert = "{files.cert}"\nkey = "{files.key}"\n'
    )
    return path


def _baton(admin: Path, *args: str) -> Result:
    """Runs ``baton ARGS --admin ADMIN`` in this process."""
    from owner.cli import app

    env = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "400"}
    return CliRunner(env=env).invoke(app, [*args, "--admin", str(admin)])


def _said(result: Result) -> str:
    """The command's output as one line (rich wraps long ones)."""
    return " ".join(result.output.split())


def _close_logs(sites: Sites) -> None:
    for log in sites.logs.values():
        log.close()


def _client(coordinator: LiveCoordinator) -> AdminClient:
    return AdminClient(coordinator.target, coordinator.pki.material("owner"))


def _as_recipient(
    coordinator: LiveCoordinator,
    tmp_path: Path,
    run: admin_pb2.Run,
    index: int,
    digest: str,
    *,
    recipient: str,
) -> bytes:
    """Hop ``index``'s stored output opened by ``recipient``, the site it was sealed to:
    the model that site would train on."""
    hop = run.hops[index]
    sealed = tmp_path / f"truth-{index}.sealed"
    sealed.write_bytes(b"".join(coordinator.server.blobs.read(hop.output.blob_id)))
    previous = run.hops[index - 1].output_manifest if index else b""
    return open_as(
        coordinator,
        recipient,
        sealed,
        hop.output_manifest,
        sender=hop.site_id,
        run_id=run.run_id,
        hop=index,
        previous=expected_previous(digest, previous),
        plan_digest=digest,
    ).read_bytes()


def test_the_owner_fetches_any_escrowed_hop_while_running_and_after(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    text = _plan(["site-a", "site-b"], cycles=2, extra=ESCROW)
    request = create_request(coordinator.pki, text)
    digest = plan_hash(text, request.plan_signature)
    admin = _admin_toml(coordinator, tmp_path)
    owner, ca_pem = coordinator.pki.keys("owner"), coordinator.pki.ca_pem
    runners = {s: sites.runner(s) for s in ("site-a", "site-b")}
    with _beating(coordinator, "site-a", "site-b"), _client(coordinator) as client:
        run_id = coordinator.admin().CreateRun(request).run.run_id
        for site in ("site-a", "site-b"):
            assert runners[site].run(next_hop(sites.stubs[site]))

        # Running: the newest hop the owner can open is hop 2; hop 3 has not completed.
        done = _baton(admin, "fetch", run_id, str(tmp_path / "mid.safetensors"), "--hop", "escrow")
        assert done.exit_code == 0, done.output
        mid = (tmp_path / "mid.safetensors").read_bytes()
        assert _said(done) == (
            f"wrote {len(mid)} bytes to {tmp_path / 'mid.safetensors'}: hop 2 of 4, trained "
            "at site-b, the newest hop you can open (sealed by spiffe://testfed/site/site-b, "
            "verified)"
        )
        state = common_pb2.HopState.Name(client.get_run(run_id).hops[2].state)
        with pytest.raises(ConflictError) as err:
            fetch_hop(client, run_id, 3, tmp_path / "h3", owner=owner, ca_pem=ca_pem)
        assert err.value.message == (
            f"hop 3 of run {run_id} has not completed yet: it is "
            f"{state.removeprefix('HOP_STATE_').lower()}"
        )
        assert not (tmp_path / "h3").exists()

        for site in ("site-a", "site-b"):
            assert runners[site].run(next_hop(sites.stubs[site]))
        run = client.get_run(run_id)
        assert run.state == common_pb2.RUN_STATE_SUCCEEDED

        # The last hop by number is the final model, byte for byte.
        fetch_result(client, run_id, tmp_path / "final.safetensors", owner=owner, ca_pem=ca_pem)
        final = (tmp_path / "final.safetensors").read_bytes()
        last = fetch_hop(client, run_id, 4, tmp_path / "h4", owner=owner, ca_pem=ca_pem)
        assert (tmp_path / "h4").read_bytes() == final
        assert (last.number, last.site_id, last.newest) == (4, "site-b", False)
        newest = fetch_hop(client, run_id, None, tmp_path / "esc", owner=owner, ca_pem=ca_pem)
        assert (newest.number, (tmp_path / "esc").read_bytes()) == (4, final)

        # Hop 2 is the model site-a trained on in hop 3: another model than the final one.
        done = _baton(admin, "fetch", run_id, str(tmp_path / "h2.safetensors"), "--hop", "2")
        assert done.exit_code == 0, done.output
        hop2 = (tmp_path / "h2.safetensors").read_bytes()
        assert (
            hop2 == mid == _as_recipient(coordinator, tmp_path, run, 1, digest, recipient="site-a")
        )
        assert hop2 != final
        weights, final_weights = (
            load_state_file(tmp_path / "h2.safetensors"),
            load_state_file(tmp_path / "final.safetensors"),
        )
        assert weights.keys() == final_weights.keys()
        assert not weights["linear.weight"].equal(final_weights["linear.weight"])

        # Numbers outside the run are refused before anything is downloaded.
        for bad, message in [
            ("5", f"run {run_id} has hops 1 to 4; there is no hop 5"),
            ("0", "--hop takes a hop number from 1, or 'escrow'; not '0'"),
        ]:
            done = _baton(admin, "fetch", run_id, str(tmp_path / "bad"), "--hop", bad)
            assert (done.exit_code, _said(done)) == (exit_codes.CLI_CONFIG, f"error: {message}")
        assert not (tmp_path / "bad").exists()

        # A stored copy that fails its hash is named, and nothing is written.
        [blob] = (coordinator.server.blobs.root / "sha256").rglob(run.hops[0].output.blob_id)
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
        with pytest.raises(ConflictError) as err:
            fetch_hop(client, run_id, 1, tmp_path / "h1", owner=owner, ca_pem=ca_pem)
        assert err.value.message == (
            f"cannot fetch hop 1 of run {run_id}: the coordinator's copy of hop 1's output "
            "fails its SHA-256 check"
        )
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".h1")) == []
        assert not (tmp_path / "h1").exists()

        # Bytes that are not the hop's blob (damaged after the check) are refused too.
        with pytest.raises(BlobError) as blob_err:
            open_sealed(
                lambda sealed: sealed.write_bytes(b"not the blob"),
                tmp_path / "h2-again",
                run.hops[1],
                owner=owner,
                me="spiffe://testfed/admin/owner",
                expect=Expectation(
                    run_id=run_id,
                    hop_index=1,
                    sender="spiffe://testfed/site/site-b",
                    previous_manifest_hash="",
                    plan_hash=digest,
                    max_plaintext_bytes=1 << 20,
                ),
                sender_key=coordinator.pki.keys("site-b").signing_key.public_key(),
            )
        assert blob_err.value.message == (
            "hop 2's sealed output as the coordinator sent it fails its SHA-256 check "
            f"(blob {run.hops[1].output.blob_id[:16]}): its copy is corrupt"
        )
        assert not (tmp_path / "h2-again").exists()


def test_only_the_runs_owner_may_download_its_hops(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    auditor = Identity(federation=FEDERATION, kind="admin", name="auditor")
    issue(coordinator.pki.root / "ca", tmp_path / "auditor", auditor)
    d = tmp_path / "auditor"
    files = TlsFiles(ca=d / "ca.pem", cert=d / "auditor.pem", key=d / "auditor.key")
    request = create_request(coordinator.pki, _plan(["site-a", "site-b"], extra=ESCROW))
    with _beating(coordinator, "site-a"):
        run_id = coordinator.admin().CreateRun(request).run.run_id
        assert sites.runner("site-a").run(next_hop(sites.stubs["site-a"]))
    with AdminClient(coordinator.target, files.load()) as other, pytest.raises(PkiError) as err:
        other.fetch_sealed_hop(run_id, 0, tmp_path / "stolen")
    assert err.value.message == (
        f"cannot fetch hop 1 of run {run_id}: the coordinator refused this certificate "
        f"(run {run_id} belongs to admin owner; admin auditor may not fetch its hops)"
    )
    assert not (tmp_path / "stolen").exists()
    with _client(coordinator) as client:
        assert client.fetch_sealed_hop(run_id, 0, tmp_path / "mine") > 0


def test_without_escrow_only_the_last_hop_opens(
    coordinator: LiveCoordinator, sites: Sites, tmp_path: Path
) -> None:
    admin = _admin_toml(coordinator, tmp_path)
    request = create_request(coordinator.pki, _plan(["site-a", "site-b"]))
    with _beating(coordinator, "site-a", "site-b"):
        run_id = coordinator.admin().CreateRun(request).run.run_id
        for site in ("site-a", "site-b"):
            assert sites.runner(site).run(next_hop(sites.stubs[site]))
    done = _baton(admin, "fetch", run_id, str(tmp_path / "h1"), "--hop", "1")
    assert (done.exit_code, _said(done)) == (
        exit_codes.CLI_ERROR,
        f"error: the owner cannot open hop 1 of run {run_id}: it is sealed only to "
        "spiffe://testfed/site/site-b, because the plan does not ask for escrow "
        "(`[security] escrow_to_owner = true`); only the run's last hop is always sealed "
        "to the owner",
    )
    assert not (tmp_path / "h1").exists()
    done = _baton(admin, "fetch", run_id, str(tmp_path / "esc"), "--hop", "escrow")
    assert done.exit_code == 0, done.output
    assert ": hop 2 of 2, trained at site-b, the newest hop you can open " in _said(done)
    done = _baton(admin, "fetch", run_id, str(tmp_path / "final"))
    assert done.exit_code == 0, done.output
    assert (tmp_path / "esc").read_bytes() == (tmp_path / "final").read_bytes()


def test_a_run_that_lost_its_re_sealer_names_the_command_that_fetches_its_escrowed_hop(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hop 3's site is lost and hop 2's, which would re-seal for another, is gone too: the
    run fails naming the escrowed hop and the command; that command opens the model hop
    3's site would have trained on."""
    faults = '\n[faults]\non_lost_site = "skip"\nmin_sites = 1\n' + ESCROW
    text = _plan(["site-a", "site-b", "site-c"], extra=faults)
    with ExitStack() as stack:
        coordinator = stack.enter_context(
            live_coordinator(pki, tmp_path / "state", lease_seconds=1.5, watch_interval_seconds=0.2)
        )
        sites = Sites(coordinator, tmp_path)
        stack.callback(_close_logs, sites)
        register(coordinator, "site-c")
        request = create_request(pki, text)
        digest = plan_hash(text, request.plan_signature)
        with (
            _beating(coordinator, "site-a", "site-b", "site-c") as alive,
            _client(coordinator) as client,
        ):
            run_id = coordinator.admin().CreateRun(request).run.run_id
            for site in ("site-a", "site-b"):
                assert sites.runner(site).run(next_hop(sites.stubs[site]))
            alive["site-b"].close()  # gone first, so nobody can re-seal hop 2 ...
            while any(s.online for s in client.list_sites() if s.site_id == "site-b"):
                time.sleep(0.1)
            alive["site-c"].close()  # ... for whoever would replace site-c at hop 3
            list(client.watch(run_id))
            run = client.get_run(run_id)
        assert run.state == common_pb2.RUN_STATE_FAILED
        [command] = re.findall(r"`(baton fetch [^`]+)`", run.error)
        assert run.error.startswith(
            "hop 3 at site-c was lost and the previous site site-b is gone too: nobody can "
            "re-seal the last completed hop; the owner can restart from the escrowed hop 2: "
            f"`baton fetch {run_id} hop-2.safetensors --hop 2` opens its sealed output, and "
            "`baton submit PLAN --start-from hop-2.safetensors` trains on from it (the plan "
            "pinning the file's SHA-256 as [model] start_from): "
        ), run.error
        monkeypatch.chdir(tmp_path)
        done = _baton(_admin_toml(coordinator, tmp_path), *shlex.split(command)[1:])
        assert done.exit_code == 0, done.output
        assert (tmp_path / "hop-2.safetensors").read_bytes() == _as_recipient(
            coordinator, tmp_path, run, 1, digest, recipient="site-c"
        )
