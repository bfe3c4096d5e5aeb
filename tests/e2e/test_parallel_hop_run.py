"""A real run whose first hop trains with a 2-rank DDP plan: the site daemon launches
torchrun, loads the workers' full model and seals it to the next site, which trains on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baton.admin_client import AdminClient
from baton.codec import load_state_file
from baton.data import Partition
from baton.localfed import provision, wait_until_online, write_site_config
from baton.owner import fetch_result
from baton.procs import ProcessGroup, wait_for_file
from baton.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["north", "south"]

PLAN = """
[run]
name = "parallel-e2e"
seed = 3
sites = ["north", "south"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_steps = 10
"""

PARALLEL = '\n[training]\nparallel_plan = "ddp"\nworkers = 2\nlauncher = "torchrun"\n'


def test_a_daemon_trains_its_hop_with_torchrun_and_seals_it_on(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path, SITES, dataset="breast_cancer", partition=Partition(kind="iid"), seed=3
    )
    serve = ["serve", "--config", str(layout.coordinator_dir / "coordinator.toml")]
    with ProcessGroup() as group:
        group.start(
            "coordinator",
            "coordinator.cli",
            [*serve, "--port-file", str(layout.port_file)],
            log_path=layout.coordinator_dir / "coordinator.log",
        )
        port = int(wait_for_file(layout.port_file, timeout=60.0, group=group))
        for site in SITES:
            config = write_site_config(layout, site, port)
            if site == "north":
                config.write_text(config.read_text() + PARALLEL)
            group.start(
                site,
                "site_node.cli",
                ["run", "--config", str(config)],
                log_path=layout.site_dir(site) / "site.log",
            )
        with AdminClient(f"127.0.0.1:{port}", layout.admin_tls.load()) as client:
            wait_until_online(client, SITES, group)
            owner = AppKeys.load(layout.owner_keys)
            run = client.create_run(PLAN, owner)
            events = list(client.watch(run.run_id))
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
            result = tmp_path / "result.safetensors"
            fetch_result(
                client, run.run_id, result, owner=owner, ca_pem=layout.admin_tls.load().ca_pem
            )
        codes = [p.stop() for p in group.procs]
    assert codes == [0, 0, 0]

    hops = list(final.hops)
    assert [(h.hop_index, h.site_id) for h in hops] == [(0, "north"), (1, "south")]
    assert hops[1].input.blob_id == hops[0].output.blob_id
    # north's progress came from its workers (throughput is reported by them only).
    progress = [
        dict(e.metrics)
        for e in events
        if e.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS and e.message == "progress"
    ]
    north = [p for p in progress if "samples_per_s" in p]
    assert north
    assert north[-1]["step"] == north[-1]["total_steps"] == 10
    assert any("samples_per_s" not in p for p in progress)  # south trained in process
    log = (layout.site_dir("north") / "site.log").read_text()
    assert "training hop 0 with plan ddp on 2 workers (torchrun)" in log
    state = load_state_file(result)
    assert all(torch.isfinite(t).all() for t in state.values())
    assert hops[1].metrics_after["accuracy"] > 0.8
    for site in SITES:
        work = layout.site_dir(site) / "work"
        assert not list(work.rglob("*.safetensors"))
