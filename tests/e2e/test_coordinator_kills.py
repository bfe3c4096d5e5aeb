"""The coordinator killed (SIGKILL) at every 5th durable write of a 3-site run, counted
over the run (each restart's own writes included): every restart comes up, the run
completes with the undisturbed run's model, and neither its events nor the signed audit
log has a gap."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from baton.ml.codec import load_state_file
from baton.security.audit import verify_log
from baton.security.pki import load_private_key
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2
from coordinator.store.kill_hook import COUNT_FILE, ENV
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import LocalFederationLayout, provision, wait_until_online, write_site_config
from sim.procs import ManagedProcess, ProcessGroup, wait_for_file
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["ash", "birch", "cedar"]
EVERY = 5
"""Every kill falls on a 5th durable write of the run, counted over all its lives."""
STEPS = (1, 2)
"""Life i dies ``EVERY * STEPS[i % 2]`` writes after its start. A restart alone takes
about ten writes (each site registering is a commit, its audit append and the outbox
commit), so lives that die at their 5th write test a crash during a restart and never move
the run; the longer lives move it on."""
MIN_KILLS = 20
SLOW = os.environ.get("BATON_SLOW_KILLS") == "1"
PLAN = """
[run]
name = "kills"
seed = 3
cycles = {cycles}
sites = ["ash", "birch", "cedar"]

[model]
name = "mlp"
args = {{ hidden = [8] }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
local_steps = 2
"""


@dataclass
class Coordinator:
    """The coordinator's processes, one per life, on one state directory and one port."""

    layout: LocalFederationLayout
    group: ProcessGroup
    port: int
    lives: list[ManagedProcess] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.layout.coordinator_dir / "state"

    def start(self, kill_at: int) -> ManagedProcess:
        """A new life; it kills itself after the state directory's ``kill_at``-th durable
        write (0: never)."""
        self.layout.port_file.unlink(missing_ok=True)
        config = self.layout.coordinator_dir / "coordinator.toml"
        life = self.group.start(
            f"coordinator-{len(self.lives)}",
            "coordinator.cli",
            ["serve", "--config", str(config), "--port-file", str(self.layout.port_file)],
            log_path=self.layout.coordinator_dir / f"life-{len(self.lives)}.log",
            env={ENV: str(kill_at)},
        )
        self.lives.append(life)
        return life

    def client(self) -> AdminClient:
        return AdminClient(f"127.0.0.1:{self.port}", self.layout.admin_tls.load())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def federation(tmp_path: Path) -> Iterator[Coordinator]:
    """3 sites online and a coordinator on a fixed port, so that restarts keep it."""
    layout, _ = provision(
        tmp_path, SITES, dataset="breast_cancer", partition=Partition(kind="iid"), seed=1
    )
    port = _free_port()
    config = layout.coordinator_dir / "coordinator.toml"
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    with ProcessGroup() as group:
        coordinator = Coordinator(layout, group, port)
        coordinator.start(kill_at=0)
        wait_for_file(layout.port_file, timeout=60, group=group)
        for site in SITES:
            cfg = write_site_config(layout, site, port)
            text = cfg.read_text().replace("heartbeat_seconds = 2.0", "heartbeat_seconds = 1.0")
            # Sites find each new life at once: a short back-off, no lost seconds per kill.
            cfg.write_text(text.replace("retry_max_seconds = 2.0", "retry_max_seconds = 0.3"))
            group.start(
                site,
                "site_node.cli",
                ["run", "--config", str(cfg)],
                log_path=layout.site_dir(site) / "site.log",
            )
        with coordinator.client() as client:
            wait_until_online(client, SITES, group)
        yield coordinator


def _writes(state_dir: Path) -> int:
    """The durable writes of the state directory so far, every life's."""
    return int((state_dir / COUNT_FILE).read_text())


def _run_state(database: Path, run_id: str) -> tuple[str, int]:
    """The run's state and how many events it has."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (state,) = db.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        (events,) = db.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return str(state), int(events)


def _finish(
    coordinator: Coordinator, run_id: str, out: Path
) -> tuple[list[admin_pb2.RunEvent], dict[str, torch.Tensor]]:
    """Follows the run to its end; returns its events and the opened model."""
    owner = AppKeys.load(coordinator.layout.owner_keys)
    ca_pem = coordinator.layout.admin_tls.load().ca_pem
    with coordinator.client() as client:
        events = list(client.watch(run_id))
        final = client.get_run(run_id)
        assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
        fetch_result(client, run_id, out, owner=owner, ca_pem=ca_pem)
    return events, load_state_file(out)


def _check_audit(coordinator: Coordinator) -> int:
    """The signed log verifies and holds every queued entry exactly once (outbox ids 1..n,
    the database's last); nothing is left queued. Returns n."""
    (log,) = coordinator.state_dir.glob("audit-*.jsonl")
    pki = coordinator.layout.coordinator_dir / "pki"
    key = load_private_key((pki / "coordinator.key").read_bytes(), source="test")
    report = verify_log(log, public_key=key.public_key())
    assert report.first_break is None, report.first_break
    ids = [int(json.loads(line)["detail"]["outbox"]) for line in log.read_text().splitlines()]
    assert ids == list(range(1, len(ids) + 1))
    with closing(sqlite3.connect(coordinator.state_dir / "coordinator.db")) as db:
        (issued,) = db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit_outbox'"
        ).fetchone()
        (queued,) = db.execute("SELECT COUNT(*) FROM audit_outbox").fetchone()
    assert (issued, queued) == (len(ids), 0)
    return len(ids)


def test_kill_at_every_fifth_write(tmp_path: Path) -> None:
    """One run survives at least 20 kills, each at a multiple of 5 of its durable writes
    (a restart's own writes count: the sites registering again, the recovery), every one
    while the run still runs and at more than one point of it; the full sweep
    (BATON_SLOW_KILLS=1) runs 3 cycles and 40 kills."""
    cycles, min_kills = (3, 40) if SLOW else (2, MIN_KILLS)
    plan = PLAN.format(cycles=cycles)
    with federation(tmp_path) as coordinator:
        first = coordinator.lives[0]
        state_dir = coordinator.state_dir
        owner = AppKeys.load(coordinator.layout.owner_keys)
        with coordinator.client() as client:
            before = _writes(state_dir)
            undisturbed = client.create_run(plan, owner)
            events_a, model_a = _finish(coordinator, undisturbed.run_id, tmp_path / "a.safetensors")
            run_writes = _writes(state_dir) - before
            victim = client.create_run(plan, owner)
        # A first crash at once, then lives that die 5 or 10 writes on (the run's count).
        first.proc.send_signal(signal.SIGKILL)
        assert first.stop() == -signal.SIGKILL
        coordinator.group.procs.remove(first)
        database = state_dir / "coordinator.db"
        base = _writes(state_dir)
        started, kills, progress, points = time.monotonic(), 0, [], []
        while kills < min_kills:
            kill_at = _writes(state_dir) + EVERY * STEPS[kills % len(STEPS)]
            life = coordinator.start(kill_at=kill_at)
            code = life.proc.wait(60)
            coordinator.group.procs.remove(life)
            assert life.stop() == -signal.SIGKILL, f"{life.name} exited {code}:\n{life.log_tail()}"
            assert _writes(state_dir) == kill_at
            state, events = _run_state(database, victim.run_id)
            assert state == "running", f"kill {kills + 1} came after the run ended ({state})"
            kills += 1
            progress.append(events)
            points.append(kill_at - base)
        killed_s = time.monotonic() - started
        coordinator.start(kill_at=0)
        wait_for_file(coordinator.layout.port_file, timeout=60, group=coordinator.group)
        events_b, model_b = _finish(coordinator, victim.run_id, tmp_path / "b.safetensors")
        audited = _check_audit(coordinator)
        total = _writes(state_dir) - base
    print(
        f"\nundisturbed run: {run_writes} durable writes, {len(events_a)} events; "
        f"killed run: {kills} kills at its writes {', '.join(map(str, points))} in "
        f"{killed_s:.1f} s, "
        f"{total} writes in all, {len(events_b)} events ({progress[0]} to {progress[-1]} "
        f"at the kills), {audited} audit entries"
    )
    assert progress[-1] > progress[0], "the kills all landed at one point of the run"
    assert model_a.keys() == model_b.keys()
    for name, tensor in model_a.items():
        assert torch.equal(tensor, model_b[name]), name
    assert [e.seq for e in events_b] == list(range(1, len(events_b) + 1))
    assert events_b[-1].kind == admin_pb2.EVENT_KIND_RUN_SUCCEEDED
    done = [e.hop_index for e in events_b if e.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED]
    assert sorted(set(done)) == list(range(3 * cycles))
