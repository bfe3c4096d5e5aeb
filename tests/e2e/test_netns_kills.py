"""Coordinator and two site daemons on three network hosts (namespaces joined by veth
pairs), each killed (SIGKILL) mid-download, mid-training, mid-upload and between hops of
one run and started again in its namespace: the run ends with exactly the model of an
undisturbed run, no hop done twice, every interrupted transfer resumed where its bytes
stopped and no partial upload left behind.

A mid-transfer kill lands at a byte count: the site's fault proxy holds the link as the
count is reached, the process is killed, and the held connections are reset (as a dead
peer's are); a mid-training kill lands once the hop's first within-hop checkpoint exists
and before its training is over; a between-hops kill once a hop's completion is logged."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from baton.ml import checkpoint
from baton.ml.codec import load_state_file
from baton.v1 import admin_pb2, common_pb2
from baton.wire.channel import CHUNK_BYTES
from owner.fetch import fetch_result
from sim.faultproxy import Direction
from tests.e2e import netns_world
from tests.e2e.netns_world import World
from tests.e2e.runs import trained_in_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ("aspen", "birch")
ORDER = ["aspen", "birch", "aspen", "birch"]
"""The site of each hop (2 cycles, fixed order)."""
STEPS, EVERY = 120, 30
"""Local steps of a hop, and a within-hop checkpoint every ``EVERY`` of them."""
CUT = 1_200_000
"""Bytes of a transfer after which its kill comes: past its first 1 MiB chunk, before the
end of the 2.8 MB blob."""
PLAN = f"""
[run]
name = "netns-kills"
seed = 5
sites = ["aspen", "birch"]
cycles = 2

[model]
name = "mlp"
args = {{ hidden = [1024, 640] }}

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"

[training]
batch_size = 16
local_steps = {STEPS}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with netns_world.world(
        tmp_path_factory.mktemp("netns-kills"),
        SITES,
        lease_seconds=8.0,
        # Sites find each new coordinator life at once: a short back-off.
        site_settings={"heartbeat_seconds": "1.0", "retry_max_seconds": "0.3"},
        site_extra=f"\n[training]\ncheckpoint_every = {EVERY}\n",
    ) as w:
        yield w


class Killer:
    """Kills the processes of one run at observed moments; keeps what it saw at each."""

    def __init__(self, world: World, run_id: str) -> None:
        self.world = world
        self.run_id = run_id
        self.seen: list[str] = []
        """One line per kill: what was killed, when, and what was observed then."""

    def work(self, site: str) -> Path:
        return self.world.layout.site_dir(site) / "work" / self.run_id

    def wait(self, what: str, ready: Callable[[], bool]) -> None:
        """Polls ``ready`` until it holds, failing if a process died or 60 s went by."""
        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, f"no {what} in 60 s"
            self.world.group.check_alive()
            time.sleep(0.005)

    def arm(self, site: str, direction: Direction) -> int:
        """Holds ``site``'s link once :data:`CUT` more bytes went ``direction``; returns
        the count so far."""
        proxy = self.world.proxies[site]
        proxy.partition_after(direction, CUT)
        return proxy.forwarded(direction)

    def mid_transfer(
        self, victim: str, site: str, direction: Direction, since: int, stored: Callable[[], int]
    ) -> int:
        """Waits for the cut :meth:`arm` set on ``site``'s link and for the receiving side
        to have stored the first chunk (``stored``: its bytes so far), kills ``victim``
        while the link is held, then resets the held connections (as a dead peer's are).
        Returns the bytes stored at the kill."""
        proxy = self.world.proxies[site]
        proxy.wait_partitioned(timeout=60)
        self.wait("first chunk stored", lambda: stored() >= CHUNK_BYTES)
        moved, kept = proxy.forwarded(direction) - since, stored()
        self.world.kill(victim)
        proxy.partition("drop")
        proxy.heal()
        self.seen.append(
            f"{victim} killed as {site}'s link had moved {moved} bytes {direction}, "
            f"{kept} of them stored"
        )
        return kept

    def mid_training(self, victim: str, site: str, hop: int) -> int:
        """Kills ``victim`` once ``site``'s hop ``hop`` has a checkpoint and is still
        training; returns the newest checkpoint's step at the kill."""
        job = self.work(site) / f"hop-{hop:05d}.job"
        self.wait(f"a checkpoint of hop {hop + 1}", lambda: _newest(job) is not None)
        assert f"hop {hop + 1}: val accuracy" not in self.world.site_log(site)
        self.world.kill(victim)
        step = _newest(job)
        assert step is not None
        self.seen.append(f"{victim} killed as {site} trained hop {hop + 1} (at step {step})")
        return step

    def between_hops(self, victim: str, site: str, hop: int) -> None:
        """Kills ``victim`` once ``site`` logged hop ``hop`` done."""
        done = f"hop {hop + 1} done in"
        self.wait(f"hop {hop + 1} done", lambda: done in self.world.site_log(site))
        self.world.kill(victim)
        self.seen.append(f"{victim} killed once {site} had hop {hop + 1} done")


def _size(path: Path) -> int:
    """The file's size (0: there is none)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _largest(folder: Path) -> int:
    """The size of the largest file in ``folder`` (the coordinator's partial uploads)."""
    return max((_size(p) for p in folder.iterdir()), default=0)


def _newest(job: Path) -> int | None:
    """The step of the newest checkpoint in ``job``, or None."""
    found = checkpoint.latest(job) if job.exists() else None
    return None if found is None else found[0]


def _audit(world: World, site: str, run_id: str) -> list[tuple[str, int, object]]:
    """(event, hop, detail) of the site's audit entries for the run."""
    path = world.layout.site_dir(site) / "work" / "audit.jsonl"
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(e["event"], e["hop"], e["detail"]) for e in entries if e.get("run_id") == run_id]


def test_each_role_killed_at_each_point_of_a_run_ends_bit_identical(
    world: World, tmp_path: Path
) -> None:
    started = time.monotonic()
    birch = world.proxies["birch"]
    partials = world.layout.coordinator_dir / "state" / "blobs" / "partial"
    uploaded = partial(_largest, partials)
    run = world.client.create_run(PLAN, world.owner)
    k = Killer(world, run.run_id)
    downloaded = {h: k.work(s) / f"hop-{h:05d}.in.sealed" for h, s in enumerate(ORDER)}
    # Hop 1 (aspen): the site dies mid-training, the coordinator mid-upload and, once the
    # hop is done, before the next begins (birch's link held: hop 2 cannot start).
    step = k.mid_training("aspen", "aspen", 0)
    world.start("aspen")
    since = k.arm("aspen", "up")
    stored = {"aspen up": k.mid_transfer("coordinator", "aspen", "up", since, uploaded)}
    birch.partition("hold")
    world.start("coordinator")
    k.between_hops("coordinator", "aspen", 0)
    assert not downloaded[1].exists()  # hop 2 had not begun
    birch.partition("drop")
    birch.heal()
    since = k.arm("birch", "down")
    world.start("coordinator")
    # Hop 2 (birch): the site dies mid-download, the coordinator mid-training, the site
    # mid-upload and, once the hop is done, between its hops.
    fetched = partial(_size, downloaded[1])
    stored["birch down"] = k.mid_transfer("birch", "birch", "down", since, fetched)
    world.start("birch")
    since = k.arm("birch", "up")
    k.mid_training("coordinator", "birch", 1)
    world.start("coordinator")
    stored["birch up"] = k.mid_transfer("birch", "birch", "up", since, uploaded)
    since = k.arm("aspen", "down")
    world.start("birch")
    k.between_hops("birch", "birch", 1)
    world.start("birch")
    # Hop 3 (aspen): the coordinator dies mid-download.
    fetched = partial(_size, downloaded[2])
    stored["aspen down"] = k.mid_transfer("coordinator", "aspen", "down", since, fetched)
    world.start("coordinator")
    events = list(world.client.watch(run.run_id))
    final = world.client.get_run(run.run_id)
    result = tmp_path / "result.safetensors"
    ca_pem = world.layout.admin_tls.load().ca_pem
    fetch_result(world.client, run.run_id, result, owner=world.owner, ca_pem=ca_pem)
    print(f"\nrun with 8 kills done in {time.monotonic() - started:.1f} s:", *k.seen, sep="\n")
    lines = [
        f"{admin_pb2.EventKind.Name(e.kind)} {e.hop_index} {e.site_id} {e.message}" for e in events
    ]

    assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error + "\n".join(lines)
    assert [(h.hop_index, h.site_id, h.state) for h in final.hops] == [
        (i, site, common_pb2.HOP_STATE_COMPLETED) for i, site in enumerate(ORDER)
    ]
    assert world.chain(run.run_id) == "4 hops verified"
    # No hop done twice: each completed once, trained once, sent once.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    done = [e.hop_index for e in events if e.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED]
    assert done == [0, 1, 2, 3], "\n".join(lines)
    logs = {site: world.site_log(site) for site in SITES}
    for hop, site in enumerate(ORDER):
        trained = re.findall(rf"hop {hop + 1}: val accuracy .* after (\d+) steps", logs[site])
        assert trained == [str(STEPS)], (hop, logs[site])
    audit = {site: _audit(world, site, run.run_id) for site in SITES}
    for site in SITES:
        sent = [hop for event, hop, _ in audit[site] if event == "hop_sent"]
        assert sent == [h for h, s in enumerate(ORDER) if s == site], audit[site]
    # The training killed with its site resumed from the checkpoint it left; the one that
    # lost the coordinator went on.
    assert [(h, d) for e, h, d in audit["aspen"] if e == "training_resumed"] == [
        (0, {"step": step, "steps": STEPS})
    ]
    assert f"hop 1: resumed from its checkpoint at step {step}" in logs["aspen"]
    assert [e for e, _, _ in audit["birch"] if e == "training_resumed"] == []
    # Every killed transfer resumed at the bytes stored at the kill: an upload at the
    # coordinator's acknowledged offset, a download at the end of the site's file.
    size = final.hops[0].output.size
    assert 0 < min(stored.values()) <= max(stored.values()) < size, stored
    resumed = {
        "aspen up": r"upload interrupted \(UNAVAILABLE, transfer \w+\); resuming at byte (\d+)",
        "birch down": r"download resumes at byte (\d+) of \d+: the kept file",
        "birch up": r"upload \w+ \(hop 2\) resumes at byte (\d+) of \d+, acknowledged before",
        "aspen down": r"download interrupted \(UNAVAILABLE\); resuming at byte (\d+)",
    }
    for what, pattern in resumed.items():
        at = {int(n) for n in re.findall(pattern, logs[what.split()[0]])}
        assert at == {stored[what]}, (what, at, logs[what.split()[0]])
    # No partial upload left, one finished upload per hop.
    assert list(partials.iterdir()) == []
    assert len(list((partials.parent / "done").iterdir())) == 4
    # The model is exactly the undisturbed run's.
    trained_model = load_state_file(result)
    want = trained_in_process(world.layout, PLAN, ORDER)
    assert trained_model.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(trained_model[name], tensor), name
