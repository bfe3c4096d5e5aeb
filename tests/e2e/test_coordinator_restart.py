"""The coordinator restarts in the middle of a run: the run resumes where it was."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import provision, wait_until_online, write_site_config
from sim.procs import ProcessGroup, wait_for_file
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["north", "south"]
PLAN = """
[run]
name = "restart"
seed = 1
cycles = 3
sites = ["north", "south"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_epochs = 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_survives_a_coordinator_restart(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path, SITES, dataset="breast_cancer", partition=Partition(kind="iid"), seed=1
    )
    port = _free_port()
    config = layout.coordinator_dir / "coordinator.toml"
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    serve = ["serve", "--config", str(config), "--port-file", str(layout.port_file)]
    log = layout.coordinator_dir / "coordinator.log"
    tls = layout.admin_tls.load()
    owner = AppKeys.load(layout.owner_keys)
    with ProcessGroup() as group:
        first = group.start("coordinator", "coordinator.cli", serve, log_path=log)
        wait_for_file(layout.port_file, timeout=60, group=group)
        for site in SITES:
            cfg = write_site_config(layout, site, port)
            group.start(
                site,
                "site_node.cli",
                ["run", "--config", str(cfg)],
                log_path=layout.site_dir(site) / "site.log",
            )
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, SITES, group)
            run = client.create_run(PLAN, owner)
            seen = 0
            for ev in client.watch(run.run_id):
                seen = ev.seq
                if ev.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED and ev.hop_index == 1:
                    break
        # Stop the coordinator mid-run, then start a new one on the same state and port.
        assert first.stop() == 0
        group.procs.remove(first)
        layout.port_file.unlink()
        group.start("coordinator-2", "coordinator.cli", serve, log_path=log)
        wait_for_file(layout.port_file, timeout=60, group=group)
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            kinds = [ev.kind for ev in client.watch(run.run_id, after_seq=seen)]
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
            fetch_result(
                client, run.run_id, tmp_path / "model.safetensors", owner=owner, ca_pem=tls.ca_pem
            )
        codes = [p.stop() for p in group.procs]
    assert codes == [0, 0, 0]
    assert kinds[-1] == admin_pb2.EVENT_KIND_RUN_SUCCEEDED
    hops = list(final.hops)
    assert [(h.hop_index, h.site_id) for h in hops] == [(i, SITES[i % 2]) for i in range(6)]
    assert all(h.state == common_pb2.HOP_STATE_COMPLETED for h in hops)
    # The chain of sealed hops is intact across the restart.
    for prev, hop in itertools.pairwise(hops):
        assert hop.input.blob_id == prev.output.blob_id
