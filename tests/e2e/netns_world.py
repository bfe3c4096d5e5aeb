"""A coordinator and site daemons on their own network hosts (namespaces joined by veth
pairs), every site's link to the coordinator through a fault proxy, each process one that
can be killed and started again in its namespace with its own state and config."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from baton.security.pki import Identity, issue
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2
from owner.client import AdminClient
from sim import netns
from sim.faultproxy import FaultProxy
from sim.localfed import (
    FEDERATION,
    LocalFederationLayout,
    provision,
    wait_until_online,
    write_site_config,
)
from sim.procs import ManagedProcess, ProcessGroup, wait_for_file
from sim.tasks import Partition
from tests.e2e import test_faults

_WORLDS = itertools.count()
"""Worlds made by this process so far."""

PORT = 7443
"""The coordinator's port on its own host: fixed, so a restart keeps it (nothing else
listens in that namespace)."""


@dataclass
class World:
    """The hosts' processes, the proxies between them, and the study owner's client."""

    client: AdminClient = field(init=False)
    owner: AppKeys = field(init=False)
    layout: LocalFederationLayout
    group: ProcessGroup
    proxies: dict[str, FaultProxy]
    hosts: dict[str, netns.Namespace]
    site_configs: dict[str, Path] = field(default_factory=dict)
    lives: dict[str, int] = field(default_factory=dict)
    """Processes started so far per role (coordinator or site), restarts included."""

    def site_log(self, site: str) -> str:
        return (self.layout.site_dir(site) / "site.log").read_text()

    def run(
        self, plan: str, *, created: Callable[[], None] = lambda: None
    ) -> tuple[admin_pb2.Run, list[str]]:
        """Creates a run, calls ``created``, follows the run to its end; returns its final
        state and its events."""
        run = self.client.create_run(plan, self.owner)
        created()
        lines = [
            f"{admin_pb2.EventKind.Name(ev.kind)} {ev.hop_index} {ev.site_id} {ev.message}"
            for ev in self.client.watch(run.run_id)
        ]
        return self.client.get_run(run.run_id), lines

    def chain(self, run_id: str) -> str:
        fed = test_faults.Federation(self.layout, self.group, self.client, self.owner)
        return test_faults.chain_report(fed, run_id)

    # Processes -------------------------------------------------------------------------

    def start(self, role: str) -> ManagedProcess:
        """Starts ``role`` (``coordinator`` or a site) in its namespace, with the state and
        config of its first life; the coordinator is waited for until it listens."""
        life = self.lives.get(role, 0)
        self.lives[role] = life + 1
        name = role if life == 0 else f"{role}-{life + 1}"
        if role == "coordinator":
            self.layout.port_file.unlink(missing_ok=True)
            args = ["coordinator.cli", "serve", "--config", str(self._coordinator_config)]
            args += ["--port-file", str(self.layout.port_file)]
            log = self.layout.coordinator_dir / "coordinator.log"
        else:
            args = ["site_node.cli", "run", "--config", str(self.site_configs[role])]
            log = self.layout.site_dir(role) / "site.log"
        proc = self.group.start(name, "sim.netns", [self.hosts[role].name, *args], log_path=log)
        if role == "coordinator":
            wait_for_file(self.layout.port_file, timeout=60, group=self.group)
        return proc

    def kill(self, role: str) -> None:
        """Kills (SIGKILL) the running process of ``role``."""
        proc = self.process(role)
        os.kill(proc.proc.pid, signal.SIGKILL)
        assert proc.stop() == -signal.SIGKILL, proc.log_tail()
        self.group.procs.remove(proc)

    def process(self, role: str) -> ManagedProcess:
        """The running process of ``role``."""
        (proc,) = [p for p in self.group.procs if p.name.split("-")[0] == role]
        return proc

    @property
    def _coordinator_config(self) -> Path:
        return self.layout.coordinator_dir / "coordinator.toml"


@contextmanager
def world(
    root: Path,
    sites: Sequence[str],
    *,
    lease_seconds: float,
    site_settings: dict[str, str] | None = None,
    site_extra: str = "",
) -> Iterator[World]:
    """Makes one namespace per role, starts the coordinator and every site, and yields once
    all sites are online; skips the test when namespaces cannot be made here.

    Args:
        root: Directory of the federation's files.
        sites: Site ids (distinct first letters: each names its namespace).
        lease_seconds: The coordinator's lease (checked twice a second).
        site_settings: Top-level site config keys to change (key: TOML value).
        site_extra: TOML appended to every site's config (e.g. a ``[training]`` table).
    """
    why = netns.unavailable()
    if why is not None:
        pytest.skip(f"needs network namespaces: {why}")
    # Each world of this process gets its own names and subnets: a namespace deleted by
    # the world before may keep its veth ends a while (until its last process is gone).
    n = next(_WORLDS)
    tag = format((os.getpid() * 8 + n) % 0xFFFFFF, "x")
    subnet = 10 + ((os.getpid() + 4 * n) % 70) * 3
    with netns.Lab(tag, subnet=subnet) as lab, ProcessGroup() as group:
        hosts = {name: lab.add(name[0]) for name in ("coordinator", *sites)}
        layout, _ = provision(
            root, list(sites), dataset="breast_cancer", partition=Partition(kind="iid"), seed=1
        )
        # The coordinator's certificate names every address it is dialled at: its own
        # (the owner) and each site's proxy.
        for old in ("coordinator.pem", "coordinator.key"):
            (layout.coordinator_dir / "pki" / old).unlink()
        issue(
            layout.ca_dir,
            layout.coordinator_dir / "pki",
            Identity(federation=FEDERATION, kind="coordinator", name="coordinator"),
            ip_addresses=[hosts[h].inner if h == "coordinator" else hosts[h].outer for h in hosts],
        )
        config = layout.coordinator_dir / "coordinator.toml"
        config.write_text(
            config.read_text()
            .replace("127.0.0.1:0", f"{hosts['coordinator'].inner}:{PORT}")
            .replace("lease_seconds = 10.0", f"lease_seconds = {lease_seconds}")
            .replace("\n[tls]", "watch_interval_seconds = 0.5\n\n[tls]")
        )
        proxies: dict[str, FaultProxy] = {}
        try:
            w = World(layout, group, proxies, hosts)
            w.start("coordinator")
            coordinator = (hosts["coordinator"].inner, PORT)
            for site in sites:
                proxies[site] = proxy = FaultProxy(coordinator, listen=(hosts[site].outer, 0))
                proxy.start()
                path = write_site_config(layout, site, PORT)
                text = path.read_text().replace(
                    f"127.0.0.1:{PORT}", f"{hosts[site].outer}:{proxy.address[1]}"
                )
                for key, value in (site_settings or {}).items():
                    text = _set(text, key, value)
                path.write_text(text + site_extra)
                w.site_configs[site] = path
                w.start(site)
            with AdminClient(f"{coordinator[0]}:{PORT}", layout.admin_tls.load()) as client:
                wait_until_online(client, sites, group)
                w.client, w.owner = client, AppKeys.load(layout.owner_keys)
                yield w
        finally:
            for proxy in proxies.values():
                proxy.stop()


def _set(toml: str, key: str, value: str) -> str:
    """``toml`` with the top-level line ``key = ...`` set to ``value``."""
    lines = toml.splitlines(keepends=True)
    (at,) = [i for i, line in enumerate(lines) if line.startswith(f"{key} = ")]
    lines[at] = f"{key} = {value}\n"
    return "".join(lines)
