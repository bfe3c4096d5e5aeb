"""Several machines of one site training one hop together (torchrun's c10d rendezvous).

A site may spread a hop over several machines ("nodes") inside the hospital. They share
a directory mounted at the same path on every node (``[training] shared_dir``, e.g. NFS)
and reach a TCP port on the primary node (``[training] rendezvous``):

* the site daemon, on the primary node, prepares the hop's job in the shared directory,
  publishes it in ``nodes.json`` under a fresh rendezvous id, and runs ``torchrun`` with a
  c10d rendezvous whose store it hosts;
* ``site-node worker-node`` on every other node watches ``nodes.json`` and runs the same
  ``torchrun`` command for each rendezvous id it has not run yet;
* the rendezvous admits ``nodes`` machines and numbers their workers; they train as one
  process group, and rank 0 writes the full result into the shared directory.

Only the primary node talks to the coordinator; the other nodes hold none of the site's
keys. The rendezvous store and the workers' collectives (gloo or NCCL) are neither
authenticated nor encrypted, as in any torchrun deployment: keep them on the site's
internal network.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from baton.io import atomic_write

logger = logging.getLogger(__name__)

ANNOUNCE_FILE = "nodes.json"
"""The job the nodes should run now, in the shared directory."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendezvous:
    """Where and how the nodes of one launch meet."""

    endpoint: str
    """``host:port`` of the rendezvous store, on the primary node."""
    nodes: int
    """Machines taking part, the primary included."""
    id: str
    """Unique per launch: a node runs each id once."""
    join_timeout_s: float = 300.0
    """How long the rendezvous waits for every node before the launch fails."""

    def __post_init__(self) -> None:
        host, sep, port = self.endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"the rendezvous must be host:port, not {self.endpoint!r}")
        if self.nodes < 2:
            raise ValueError(f"a rendezvous needs at least 2 nodes, not {self.nodes}")
        if not self.join_timeout_s > 0:
            raise ValueError("'join_timeout_s' must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeGroup:
    """The machines a site spreads its hops over (``[training]`` of the site config)."""

    nodes: int
    """Machines, the primary included."""
    endpoint: str
    """``host:port`` of the rendezvous store on the primary node."""
    shared_dir: Path
    """A directory every node mounts at the same path."""
    local_addr: str = ""
    """The primary's address for the other nodes (empty: its host name)."""
    join_timeout_s: float = 300.0
    """How long a launch waits for every node."""

    def rendezvous(self) -> Rendezvous:
        """A fresh rendezvous for one launch."""
        return Rendezvous(
            endpoint=self.endpoint,
            nodes=self.nodes,
            id=uuid.uuid4().hex,
            join_timeout_s=self.join_timeout_s,
        )


def torchrun_command(
    job_path: Path,
    *,
    nproc: int,
    rendezvous: Rendezvous | None,
    host: bool = True,
    local_addr: str = "",
) -> list[str]:
    """The ``torchrun`` command line of one node.

    Args:
        job_path: The job file.
        nproc: Workers on this node.
        rendezvous: None for a single node (``--standalone``).
        host: Whether this node hosts the rendezvous store (the primary).
        local_addr: The address other nodes reach this node's workers at (empty: the
            host name).
    """
    command = [sys.executable, "-m", "torch.distributed.run"]
    if rendezvous is None:
        command.append("--standalone")
    else:
        conf = f"is_host={str(host).lower()},join_timeout={int(rendezvous.join_timeout_s)}"
        command += [
            "--nnodes",
            str(rendezvous.nodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            rendezvous.endpoint,
            "--rdzv-id",
            rendezvous.id,
            "--rdzv-conf",
            conf,
        ]
        if local_addr:
            command += ["--local-addr", local_addr]
    # torchrun keeps its per-run log directory under the job directory, which the hop
    # removes; left to itself it makes one in the system temp directory on every run
    # and never removes it.
    command += ["--log-dir", str(job_path.parent / "torchrun")]
    worker = ["-m", "site_node.parallel.worker", str(job_path)]
    return [*command, "--nproc-per-node", str(nproc), *worker]


def announce(shared_dir: Path, job_path: Path, rendezvous: Rendezvous, *, nproc: int) -> None:
    """Publishes a launch to the other nodes (atomically: a node never reads half of it)."""
    record = {"job": str(job_path), "nproc": nproc, "rendezvous": asdict(rendezvous)}
    # Readable by the other nodes' daemons; it names a path and an endpoint, no secret.
    atomic_write(shared_dir / ANNOUNCE_FILE, json.dumps(record), mode=0o644)


def withdraw(shared_dir: Path, rendezvous_id: str) -> None:
    """Removes the announcement of ``rendezvous_id`` if it is still the current one."""
    current = _read(shared_dir)
    if current is not None and current[1].id == rendezvous_id:
        (shared_dir / ANNOUNCE_FILE).unlink(missing_ok=True)


def _read(shared_dir: Path) -> tuple[Path, Rendezvous, int] | None:
    try:
        raw = json.loads((shared_dir / ANNOUNCE_FILE).read_text(encoding="utf-8"))
        return Path(raw["job"]), Rendezvous(**raw["rendezvous"]), int(raw["nproc"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring an unreadable %s: %s", ANNOUNCE_FILE, exc)
        return None


def serve_node(
    shared_dir: Path,
    *,
    stop: threading.Event,
    local_addr: str = "",
    poll_s: float = 0.5,
) -> int:
    """Runs this node's share of every launch announced in ``shared_dir`` until ``stop``.

    Returns:
        The number of launches this node took part in.
    """
    done: set[str] = set()
    joined = 0
    logger.info("worker node watching %s", shared_dir / ANNOUNCE_FILE)
    while not stop.is_set():
        current = _read(shared_dir)
        if current is None or current[1].id in done:
            stop.wait(poll_s)
            continue
        job_path, rendezvous, nproc = current
        done.add(rendezvous.id)
        command = torchrun_command(
            job_path, nproc=nproc, rendezvous=rendezvous, host=False, local_addr=local_addr
        )
        logger.info(
            "joining rendezvous %s at %s with %d workers", rendezvous.id, rendezvous.endpoint, nproc
        )
        with (job_path.parent / f"workers-{os.uname().nodename}.log").open("ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                if stop.wait(poll_s):
                    proc.terminate()
                    proc.wait()
        joined += 1
        if proc.returncode == 0:
            logger.info("rendezvous %s: this node's workers finished", rendezvous.id)
        else:
            logger.warning(
                "rendezvous %s: this node's workers exited with code %d (see %s)",
                rendezvous.id,
                proc.returncode,
                log.name,
            )
    return joined
