"""Sites killed mid-hop (kill -9) under each ``[faults]`` policy: coordinator and sites as
separate processes over mTLS, with a short lease.

One federation serves the whole module; each test kills sites of its own, so no test
depends on another having run. The skip and reroute runs (5 sites x 3 cycles each, the
issue's acceptance size) go side by side, so their lease waits overlap.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from baton.security.chain import verify_run_chain
from baton.security.sealing import ENCRYPTION_CERT_FILE, SIGNING_CERT_FILE, AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.cli_verify import run_evidence
from owner.client import AdminClient
from sim.localfed import LocalFederationLayout, provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["west", "xeno", "york", "zulu", "vale"]
"""The skip run's sites, in the fixed order; :data:`VICTIM` is lost for good."""
VICTIM = "xeno"
REROUTED = ["west", "ural", "york", "zulu", "vale"]
"""The reroute run's sites; ``ural`` is lost for good."""
WAITED, RETRIED, TOO_FEW = "kiwi", "lima", "mesa"
"""The sites the wait, retry and min_sites tests kill, each run with ``west``."""
ALL_SITES = [*SITES, "ural", WAITED, RETRIED, TOO_FEW]
LEASE_S = 5.0
PLAN = """
[run]
name = "faults"
seed = 1
cycles = {cycles}
sites = {sites}

[model]
name = "mlp"
args = {{ hidden = [8] }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_epochs = 1

[faults]
{faults}
"""


@dataclass
class Federation:
    layout: LocalFederationLayout
    group: ProcessGroup
    client: AdminClient
    owner: AppKeys
    admin: Path | None = None
    """The study owner's ``baton`` config (``--admin``), for running commands."""


@contextmanager
def federation(tmp_path: Path, sites: list[str]) -> Iterator[Federation]:
    """Coordinator (lease 5 s, checked twice a second) and one daemon per site, online;
    with an ``--admin`` config for the ``baton`` commands."""
    layout, _ = provision(
        tmp_path, sites, dataset="breast_cancer", partition=Partition(kind="iid"), seed=1
    )
    config = layout.coordinator_dir / "coordinator.toml"
    config.write_text(
        config.read_text().replace(
            "lease_seconds = 10.0", f"lease_seconds = {LEASE_S}\nwatch_interval_seconds = 0.5"
        )
    )
    with ProcessGroup() as group:
        port = start(layout, sites, group)
        with AdminClient(f"127.0.0.1:{port}", layout.admin_tls.load()) as client:
            wait_until_online(client, sites, group)
            pki = layout.owner_dir / "pki"
            admin = layout.owner_dir / "admin.toml"
            admin.write_text(
                f'coordinator = "127.0.0.1:{port}"\nkeys_dir = "{layout.owner_keys}"\n'
                f'[tls]\nca = "{pki / "ca.pem"}"\n'
                f'cert = "{pki / "study-owner.pem"}"\nkey = "{pki / "study-owner.key"}"\n'
            )
            yield Federation(layout, group, client, AppKeys.load(layout.owner_keys), admin)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Every site of the module's tests, started once."""
    with federation(tmp_path_factory.mktemp("faults"), ALL_SITES) as fed:
        yield fed


def baton(fed: Federation, *args: str) -> str:
    """Runs ``baton ARGS --admin ...`` in this process; returns its output, failing the test
    on a non-zero exit."""
    from owner.cli import app

    assert fed.admin is not None
    env = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    done = CliRunner(env=env).invoke(app, [*args, "--admin", str(fed.admin)])
    assert done.exit_code == 0, done.output
    return done.output


def kill_when_assigned(fed: Federation, run_id: str, victim: str) -> tuple[float, list[str]]:
    """Follows the run; kills ``victim`` (kill -9) as its first hop is assigned. Returns
    the kill time and every event line until the run ends."""
    killed_at, lines = 0.0, []
    for ev in fed.client.watch(run_id):
        kind = admin_pb2.EventKind.Name(ev.kind)
        lines.append(f"{kind} {ev.hop_index} {ev.site_id} {ev.message}")
        if not killed_at and ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED and ev.site_id == victim:
            proc = next(p for p in fed.group.procs if p.name == victim)
            os.kill(proc.proc.pid, signal.SIGKILL)
            killed_at = time.time()
    return killed_at, lines


def chain_report(fed: Federation, run_id: str) -> str:
    run = fed.client.get_run(run_id)
    hops, following = run_evidence(run, {s.site_id: s for s in fed.client.list_sites()})
    report = verify_run_chain(
        ca_pem=fed.layout.admin_tls.load().ca_pem,
        run_id=run_id,
        plan_toml=run.plan_toml,
        plan_signature=run.plan_signature,
        owner_signing_pem=(fed.layout.owner_keys / SIGNING_CERT_FILE).read_bytes(),
        owner_encryption_pem=(fed.layout.owner_keys / ENCRYPTION_CERT_FILE).read_bytes(),
        hops=hops,
        next_site_id=following,
    )
    return report.describe()


def plan(sites: list[str], faults: str, cycles: int = 1) -> str:
    return PLAN.format(cycles=cycles, sites=sites, faults=faults).replace("'", '"')


def test_skip_and_reroute_lose_one_hop_per_cycle_and_report_exactly_those(fed: Federation) -> None:
    """5 sites x 3 cycles, one site lost for good, under ``skip`` and ``reroute`` (two runs
    side by side): each run completes, each cycle lost the victim's hop and nothing else,
    no hop trained twice, ``baton report`` lists exactly the dropped hops, ``baton
    verify-run`` accepts the chain."""
    runs = {
        "skip": (SITES, VICTIM),
        "reroute": (REROUTED, "ural"),
    }
    created = {
        action: fed.client.create_run(
            plan(sites, f'on_lost_site = "{action}"\nmin_sites = 2', cycles=3), fed.owner
        ).run_id
        for action, (sites, _) in runs.items()
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        followed = {
            action: pool.submit(kill_when_assigned, fed, created[action], victim)
            for action, (_, victim) in runs.items()
        }
        lines = {action: f.result()[1] for action, f in followed.items()}
    for action, (sites, victim) in runs.items():
        run_id = created[action]
        final = fed.client.get_run(run_id)
        why = final.error + "\n" + "\n".join(lines[action])
        assert final.state == common_pb2.RUN_STATE_SUCCEEDED, why
        kept = [s for s in sites if s != victim]
        assert [(h.cycle, h.site_id) for h in final.hops] == [
            (c, s) for c in range(3) for s in kept
        ], why
        assert all(h.state == common_pb2.HOP_STATE_COMPLETED for h in final.hops)
        # No hop duplicated: each index once, each site's hop trained once per cycle.
        assert [h.hop_index for h in final.hops] == list(range(12))
        decided = [line.split(";")[0] for line in lines[action] if "EVENT_KIND_FAULT" in line]
        assert decided == [
            line
            for k in (1, 5, 9)  # the victim's planned place in each cycle, 0-based
            for line in (
                f"EVENT_KIND_FAULT {k} {victim} {action}: hop {k + 1} at {victim} was lost",
                f"EVENT_KIND_FAULT {k - 1} west reseal: hop {k} at west seals its output "
                "again for york",
            )
        ], why
        report: dict[str, Any] = json.loads(baton(fed, "report", run_id, "--json"))
        assert [
            (f["hop"], f["cycle"], f["site"], f["action"])
            for f in report["faults"]
            if f["action"] in ("skip", "reroute")
        ] == [(k + 1, c + 1, victim, action) for c, k in enumerate((1, 5, 9))]
        assert all(f["reason"].endswith("(lease expired)") for f in report["faults"][::2])
        assert [h["site"] for h in report["hops"]] == [s for _ in range(3) for s in kept]
        # Every receiving site verified the chain (the run went on); so does the owner.
        assert f"run {run_id}: 12 hops verified, chain intact" in baton(fed, "verify-run", run_id)
        log = (fed.layout.coordinator_dir / "coordinator.log").read_text()
        assert f"{action}: hop 2 at {victim} was lost" in log


def test_wait_warns_the_owner_within_two_leases(fed: Federation) -> None:
    run = fed.client.create_run(plan(["west", WAITED], ""), fed.owner)
    killed_at, warning = 0.0, None
    for ev in fed.client.watch(run.run_id):
        if ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED and ev.site_id == WAITED:
            proc = next(p for p in fed.group.procs if p.name == WAITED)
            os.kill(proc.proc.pid, signal.SIGKILL)
            killed_at = time.time()
        if ev.kind == admin_pb2.EVENT_KIND_FAULT:
            warning = ev
            fed.client.cancel_run(run.run_id, "test over")
    assert warning is not None
    assert warning.message.startswith(f"wait: site {WAITED} offline since ")
    assert f"hop 2 at {WAITED} was lost; waiting for the site" in warning.message
    assert warning.time_unix_ms / 1000 - killed_at < 2 * LEASE_S


@pytest.mark.parametrize(
    ("victim", "faults", "reason"),
    [
        (
            RETRIED,
            'on_lost_site = "retry"\nmax_retries = 1',
            f"hop 2 at {RETRIED} was lost after 1 retries (max_retries): no heartbeat for 5 s",
        ),
        (
            TOO_FEW,
            'on_lost_site = "skip"\nmin_sites = 2',
            f"hop 2 at {TOO_FEW} was lost and only 1 sites remain (min_sites = 2): no heartbeat",
        ),
    ],
    ids=["retry", "min_sites"],
)
def test_bounded_policies_fail_the_run_with_a_clear_reason(
    fed: Federation, victim: str, faults: str, reason: str
) -> None:
    run = fed.client.create_run(plan(["west", victim], faults), fed.owner)
    kill_when_assigned(fed, run.run_id, victim)
    final = fed.client.get_run(run.run_id)
    assert final.state == common_pb2.RUN_STATE_FAILED
    assert final.error.startswith(reason), final.error
