"""A site killed mid-hop (kill -9) under each ``[faults]`` policy: coordinator and sites as
separate processes over mTLS, with a short lease."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from baton.security.chain import verify_run_chain
from baton.security.sealing import ENCRYPTION_CERT_FILE, SIGNING_CERT_FILE, AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.cli_verify import run_evidence
from owner.client import AdminClient
from sim.localfed import LocalFederationLayout, provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["west", "xeno", "york", "zulu"]
VICTIM = "xeno"
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


@contextmanager
def federation(tmp_path: Path, sites: list[str]) -> Iterator[Federation]:
    """Coordinator (lease 5 s, checked twice a second) and one daemon per site, online."""
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
            yield Federation(layout, group, client, AppKeys.load(layout.owner_keys))


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


@pytest.mark.parametrize("action", ["skip", "reroute"])
def test_a_site_killed_mid_hop_loses_one_hop_per_cycle_and_the_chain_verifies(
    tmp_path: Path, action: str
) -> None:
    with federation(tmp_path, SITES) as fed:
        plan = PLAN.format(
            cycles=2, sites=SITES, faults=f'on_lost_site = "{action}"\nmin_sites = 2'
        ).replace("'", '"')
        run = fed.client.create_run(plan, fed.owner)
        _, lines = kill_when_assigned(fed, run.run_id, VICTIM)
        final = fed.client.get_run(run.run_id)
        assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error + "\n".join(lines)
        # Each cycle lost the victim's hop and nothing else; every hop trained once.
        assert [(h.cycle, h.site_id) for h in final.hops] == [
            (c, s) for c in (0, 1) for s in SITES if s != VICTIM
        ]
        assert all(h.state == common_pb2.HOP_STATE_COMPLETED for h in final.hops)
        decided = [line for line in lines if line.startswith("EVENT_KIND_FAULT")]
        assert [line.split(";")[0] for line in decided] == [
            f"EVENT_KIND_FAULT 1 {VICTIM} {action}: hop 2 at {VICTIM} was lost",
            "EVENT_KIND_FAULT 0 west reseal: hop 1 at west seals its output again for york",
            f"EVENT_KIND_FAULT 4 {VICTIM} {action}: hop 5 at {VICTIM} was lost",
            "EVENT_KIND_FAULT 3 west reseal: hop 4 at west seals its output again for york",
        ]
        # Every receiving site verified the chain (the run went on); so does the owner.
        assert chain_report(fed, run.run_id) == "6 hops verified"
        log = (fed.layout.coordinator_dir / "coordinator.log").read_text()
        assert f"{action}: hop 2 at {VICTIM} was lost" in log


def test_wait_warns_the_owner_within_two_leases(tmp_path: Path) -> None:
    with federation(tmp_path, SITES[:2]) as fed:
        plan = PLAN.format(cycles=1, sites=SITES[:2], faults="").replace("'", '"')
        run = fed.client.create_run(plan, fed.owner)
        killed_at, warning = 0.0, None
        for ev in fed.client.watch(run.run_id):
            if ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED and ev.site_id == VICTIM:
                proc = next(p for p in fed.group.procs if p.name == VICTIM)
                os.kill(proc.proc.pid, signal.SIGKILL)
                killed_at = time.time()
            if ev.kind == admin_pb2.EVENT_KIND_FAULT:
                warning = ev
                fed.client.cancel_run(run.run_id, "test over")
        assert warning is not None
        assert warning.message.startswith(f"wait: site {VICTIM} offline since ")
        assert f"hop 2 at {VICTIM} was lost; waiting for the site" in warning.message
        assert warning.time_unix_ms / 1000 - killed_at < 2 * LEASE_S


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (
            'on_lost_site = "retry"\nmax_retries = 1',
            f"hop 2 at {VICTIM} was lost after 1 retries (max_retries): no heartbeat for 5 s",
        ),
        (
            'on_lost_site = "skip"\nmin_sites = 2',
            f"hop 2 at {VICTIM} was lost and only 1 sites remain (min_sites = 2): no heartbeat",
        ),
    ],
    ids=["retry", "min_sites"],
)
def test_bounded_policies_fail_the_run_with_a_clear_reason(
    tmp_path: Path, faults: str, reason: str
) -> None:
    with federation(tmp_path, SITES[:2]) as fed:
        plan = PLAN.format(cycles=1, sites=SITES[:2], faults=faults).replace("'", '"')
        run = fed.client.create_run(plan, fed.owner)
        kill_when_assigned(fed, run.run_id, VICTIM)
        final = fed.client.get_run(run.run_id)
        assert final.state == common_pb2.RUN_STATE_FAILED
        assert final.error.startswith(reason), final.error
