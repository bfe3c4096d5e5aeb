"""A whole federation on one machine: throwaway PKI, per-site data directories, config files,
and the coordinator and site daemons as separate OS processes on loopback.

This is the backbone of ``baton demo`` and of the end-to-end tests: every process runs the
same code a hospital would, reading only its own directory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from baton.errors import ProcessExited
from baton.ml.data import write_site_data
from baton.security.pki import Identity, create_ca, issue
from baton.security.sealing import provision_app_keys
from baton.security.tls import TlsFiles
from owner.client import AdminClient
from sim.procs import ProcessGroup, wait_for_file
from sim.tasks import Federation, Partition, make_federation

logger = logging.getLogger(__name__)

FEDERATION = "demo"
ADMIN_NAME = "study-owner"


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalFederationLayout:
    """Where everything of a local federation lives under its work directory."""

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def coordinator_dir(self) -> Path:
        return self.root / "coordinator"

    @property
    def owner_dir(self) -> Path:
        return self.root / "owner"

    def site_dir(self, site_id: str) -> Path:
        return self.root / "sites" / site_id

    @property
    def port_file(self) -> Path:
        return self.coordinator_dir / "port"

    @property
    def owner_keys(self) -> Path:
        """The study owner's application keys and certificates."""
        return self.owner_dir / "keys"

    @property
    def admin_tls(self) -> TlsFiles:
        pki = self.owner_dir / "pki"
        return TlsFiles(
            ca=pki / "ca.pem", cert=pki / f"{ADMIN_NAME}.pem", key=pki / f"{ADMIN_NAME}.key"
        )


def provision_pki(root: Path, site_ids: Sequence[str]) -> LocalFederationLayout:
    """Creates the federation's CA, the coordinator's and study owner's certificates and
    keys, each site's certificates and keys, and the coordinator's config under ``root``.

    The sites' data directories are the caller's to fill (``site_dir(id) / "data"``).
    """
    layout = LocalFederationLayout(root=root)
    create_ca(layout.ca_dir, FEDERATION)
    coord_pki = layout.coordinator_dir / "pki"
    issue(
        layout.ca_dir,
        coord_pki,
        Identity(federation=FEDERATION, kind="coordinator", name="coordinator"),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    owner = Identity(federation=FEDERATION, kind="admin", name=ADMIN_NAME)
    issue(layout.ca_dir, layout.owner_dir / "pki", owner)
    provision_app_keys(layout.ca_dir, layout.owner_keys, owner)
    (layout.coordinator_dir / "coordinator.toml").write_text(
        'listen = "127.0.0.1:0"\nstate_dir = "state"\nlease_seconds = 10.0\n\n'
        '[tls]\nca = "pki/ca.pem"\ncert = "pki/coordinator.pem"\nkey = "pki/coordinator.key"\n',
        encoding="utf-8",
    )
    for site_id in site_ids:
        site_dir = layout.site_dir(site_id)
        identity = Identity(federation=FEDERATION, kind="site", name=site_id)
        issue(layout.ca_dir, site_dir / "pki", identity)
        provision_app_keys(layout.ca_dir, site_dir / "keys", identity)
    return layout


def provision(
    root: Path,
    site_ids: Sequence[str],
    *,
    dataset: str,
    partition: Partition,
    seed: int,
    task: str | None = None,
) -> tuple[LocalFederationLayout, Federation]:
    """Creates the PKI (:func:`provision_pki`), writes each site's data and every config
    file under ``root``.

    ``task`` is the task the sites' schema declares: by default the dataset's own toy
    task; ``"tabular"`` serves the same table to the built-in tabular task.

    Returns the layout and the federation's data (the global test split stays with the
    caller, playing the study owner; sites get only their own files).
    """
    layout = provision_pki(root, site_ids)
    fed = make_federation(dataset, site_ids, partition, seed=seed)
    if task is not None:
        fed = dataclasses.replace(fed, schema=dataclasses.replace(fed.schema, task=task))
    for site_id in site_ids:
        write_site_data(layout.site_dir(site_id) / "data", fed.sites[site_id], fed.schema)
    return layout, fed


def write_site_config(
    layout: LocalFederationLayout, site_id: str, port: int, *, torch_threads: int = 1
) -> Path:
    """Writes a site's config pointing at the coordinator's port; returns its path."""
    path = layout.site_dir(site_id) / "site.toml"
    path.write_text(
        f'coordinator = "127.0.0.1:{port}"\n'
        'data_dir = "data"\nwork_dir = "work"\nkeys_dir = "keys"\n'
        f"heartbeat_seconds = 2.0\ntorch_threads = {torch_threads}\n"
        "retry_initial_seconds = 0.2\nretry_max_seconds = 2.0\n\n"
        f'[tls]\nca = "pki/ca.pem"\ncert = "pki/{site_id}.pem"\nkey = "pki/{site_id}.key"\n',
        encoding="utf-8",
    )
    return path


def start(
    layout: LocalFederationLayout,
    site_ids: Sequence[str],
    group: ProcessGroup,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    site_config_extra: Mapping[str, str] | None = None,
) -> int:
    """Starts the coordinator, then one daemon per site; returns the coordinator's port.

    ``site_config_extra`` appends TOML to a site's config (e.g. a ``[training]`` table).
    """
    layout.port_file.unlink(missing_ok=True)
    group.start(
        "coordinator",
        "coordinator.cli",
        [
            "serve",
            "--config",
            str(layout.coordinator_dir / "coordinator.toml"),
            "--port-file",
            str(layout.port_file),
        ],
        log_path=layout.coordinator_dir / "coordinator.log",
        env=env,
    )
    port = int(wait_for_file(layout.port_file, timeout=startup_timeout, group=group))
    for site_id in site_ids:
        config = write_site_config(layout, site_id, port)
        extra = (site_config_extra or {}).get(site_id)
        if extra:
            config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
        group.start(
            site_id,
            "site_node.cli",
            ["run", "--config", str(config)],
            log_path=layout.site_dir(site_id) / "site.log",
            env=env,
        )
    return port


def wait_until_online(
    client: AdminClient, site_ids: Sequence[str], group: ProcessGroup, *, timeout: float = 90.0
) -> None:
    """Waits until every site has registered and holds a lease."""
    deadline = time.monotonic() + timeout
    want = set(site_ids)
    while time.monotonic() < deadline:
        group.check_alive()
        online = {s.site_id for s in client.list_sites() if s.online}
        if want <= online:
            return
        time.sleep(0.2)
    raise ProcessExited(
        f"sites not online after {timeout:.0f}s: {', '.join(sorted(want - online))}"
    )
