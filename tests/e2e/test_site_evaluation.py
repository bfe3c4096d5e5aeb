"""Every site evaluates a finished run's final model, and a later run uses it as a probe.

The last hop is sealed to the study owner and, as the signed plan asks, to every site;
each site opens it, scores it on its validation split and reports only the metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from baton.ml.codec import load_into, load_state_file
from baton.ml.data import read_site_data
from baton.ml.models import plan_model
from baton.ml.trainer import evaluate
from baton.plan import parse_plan
from baton.security.manifest import HopManifest
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["north", "south", "east"]
PROBE = """
[run]
name = "probe"
seed = 4
sites = ["north", "south", "east"]
evaluate_at_sites = true

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_epochs = 1
"""
FOLLOW_UP = """
[run]
name = "informed"
seed = 4
sites = ["north", "south", "east"]

[model]
name = "mlp"
args = {{ hidden = [16] }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "learned"
options = {{ min_observations = 1, explore = "greedy" }}
probe_runs = ["{probe}"]

[training]
local_epochs = 1
"""


def _evaluations(client: AdminClient, run_id: str, want: int) -> list[admin_pb2.RunEvent]:
    deadline = time.monotonic() + 60
    while True:
        found = [e for e in client.watch(run_id) if e.kind == admin_pb2.EVENT_KIND_SITE_EVALUATED]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_every_site_evaluates_the_final_model_and_a_later_run_uses_it(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path, SITES, dataset="breast_cancer", partition=Partition(kind="iid"), seed=4
    )
    tls = layout.admin_tls.load()
    owner = AppKeys.load(layout.owner_keys)
    with ProcessGroup() as group:
        port = start(layout, SITES, group)
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, SITES, group)
            probe = client.create_run(PROBE, owner)
            list(client.watch(probe.run_id))
            assert client.get_run(probe.run_id).state == common_pb2.RUN_STATE_SUCCEEDED
            result = tmp_path / "final.safetensors"
            manifest: HopManifest = fetch_result(
                client, probe.run_id, result, owner=owner, ca_pem=tls.ca_pem
            )
            evaluations = _evaluations(client, probe.run_id, len(SITES))

            follow = client.create_run(FOLLOW_UP.format(probe=probe.run_id), owner)
            list(client.watch(follow.run_id))
            followed = client.get_run(follow.run_id)
        assert [p.stop() for p in group.procs] == [0] * (len(SITES) + 1)

    # The final model was sealed to the owner and to each site, nobody else.
    holders = {k.recipient for k in manifest.wrapped_keys}
    assert holders == {manifest.recipient} | {
        f"spiffe://{manifest.sender.split('/')[2]}/site/{s}" for s in SITES
    }
    # Each site reported exactly what its own validation split gives the final model.
    plan = parse_plan(PROBE)
    assert sorted(e.site_id for e in evaluations) == sorted(SITES)
    for event in evaluations:
        schema, data = read_site_data(layout.site_dir(event.site_id) / "data")
        model = plan_model(plan, schema)
        load_into(model, load_state_file(result))
        assert dict(event.metrics) == evaluate(model, data.val)
        assert event.hop_index == len(SITES)
    # The follow-up run planned its cycle with the probe and ran to the end.
    assert followed.state == common_pb2.RUN_STATE_SUCCEEDED, followed.error
    log = (layout.coordinator_dir / "coordinator.log").read_text()
    assert f"run {follow.run_id} cycle 1 order (1 probe run):" in log
