"""A real run: coordinator and three site daemons as separate OS processes over mTLS."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baton.plan import parse_plan
from baton.security.audit import verify_log
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2
from sim.localfed import provision
from sim.simulate import simulate_sequential
from sim.tasks import Partition
from tests.e2e.runs import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["north", "south", "east"]

PLAN = """
[run]
name = "e2e"
seed = 3
cycles = 2
sites = ["north", "south", "east"]

[model]
name = "mlp"
args = { hidden = [16] }

[task]
dataset = "breast_cancer"

[ordering]
strategy = "reshuffle"

[training]
local_epochs = 1
"""


def test_three_site_run_passes_the_model_through_every_site(tmp_path: Path) -> None:
    layout, fed = provision(
        tmp_path,
        SITES,
        dataset="breast_cancer",
        partition=Partition(kind="dirichlet", alpha=0.5),
        seed=3,
    )
    outcome = run_to_the_end(layout, SITES, PLAN)
    final, events, state = outcome.run, outcome.events, outcome.state
    # Every process shut down cleanly on SIGTERM.
    assert outcome.exit_codes == [0, 0, 0, 0]

    hops = list(final.hops)
    assert [h.hop_index for h in hops] == list(range(6))
    for cycle in (0, 1):
        assert sorted(h.site_id for h in hops if h.cycle == cycle) == sorted(SITES)
    # Reshuffle: no site trains twice in a row across the cycle boundary.
    assert hops[2].site_id != hops[3].site_id
    # The model changed at every hop: every output blob differs from its input and from all others.
    outputs = [h.output.blob_id for h in hops]
    assert len(set(outputs)) == 6
    for prev, hop in itertools.pairwise(hops):
        assert hop.input.blob_id == prev.output.blob_id
    assert all(h.metrics_after["num_examples"] > 0 for h in hops)
    completed = [e for e in events if e.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED]
    assert [e.site_id for e in completed] == [h.site_id for h in hops]
    # Canary: the input normalization set at hop 0 rides unchanged in every hop's weights,
    # and the final weights end the run. Neither appears anywhere the coordinator writes.
    canaries = [
        state["input_norm.mean"].numpy().tobytes(),
        state["body.0.weight"].numpy().tobytes()[:64],
    ]
    coordinator_files = [p for p in layout.coordinator_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in coordinator_files)
    for path in coordinator_files:
        data = path.read_bytes()
        for canary in canaries:
            assert canary not in data, f"plaintext weights found in {path}"
    # Each site keeps no plaintext model once its hop is done, and its signed audit log
    # records the hops it received and sent (two per cycle) and verifies.
    for site in SITES:
        work = layout.site_dir(site) / "work"
        assert not list(work.rglob("*.safetensors"))
        # A site keeps its sealed output (ciphertext only) until its next hop of the run:
        # what remains is its hop of the last cycle, nothing accumulates per hop.
        kept = sorted(p.parent.name for p in work.rglob("sealed"))
        assert kept == [f"hop-{h.hop_index:05d}.out" for h in hops[3:] if h.site_id == site]
        report = verify_log(
            work / "audit.jsonl",
            public_key=AppKeys.load(layout.site_dir(site) / "keys").signing_key.public_key(),
        )
        assert report.ok, report.first_break
        logged = [
            json.loads(line)["event"] for line in (work / "audit.jsonl").read_text().splitlines()
        ]
        assert logged.count("hop_sent") == 2
        assert logged.count("hop_received") == (2 if hops[0].site_id != site else 1)
    # The processes computed exactly what the in-process simulator computes for the same
    # plan, data and order: transport and relay changed nothing.
    orders = [[h.site_id for h in hops if h.cycle == c] for c in (0, 1)]
    simulated = simulate_sequential(parse_plan(PLAN), fed, orders).state
    assert state.keys() == simulated.keys()
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, simulated[name], rtol=0, atol=1e-6)
    # Each site read only its own directory: no site log mentions another site's data path.
    for site in SITES:
        log = (layout.site_dir(site) / "site.log").read_text()
        assert "registered with the coordinator as " + site in log
        for other in set(SITES) - {site}:
            assert str(layout.site_dir(other)) not in log


def test_demo_command_writes_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "owner.cli",
            "demo",
            "--sites",
            "3",
            "--cycles",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert len(data["hops"]) == 6
    assert sorted(data["order"][0]) == ["hospital-1", "hospital-2", "hospital-3"]
    assert data["final_accuracy"] >= 0.85
    assert data["centralized_accuracy"] >= 0.9
    assert "Held-out test set" in proc.stdout
    # --workdir keeps the coordinator's database and every site's directory.
    assert (tmp_path / "work" / "coordinator" / "state" / "coordinator.db").exists()
    assert (tmp_path / "work" / "sites" / "hospital-2" / "data" / "train.csv").exists()
