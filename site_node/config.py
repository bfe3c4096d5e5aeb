"""The site daemon's configuration file (TOML); relative paths are relative to the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from baton.config import load
from baton.ml.gate import GatePolicy
from baton.probe import ProbeConfig, check_listen
from baton.security.tls import TlsFiles
from site_node.parallel.nodes import NodeGroup, Rendezvous

PARALLEL_PLANS = ("auto", "single", "ddp", "fsdp", "tp", "fsdp_tp", "pp")
"""Values of ``[training] parallel_plan``."""
LAUNCHERS = ("torchrun", "fork")
"""Values of ``[training] launcher``."""
DEVICES = ("auto", "cpu", "cuda")
"""Values of ``[training] device``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteTraining:
    """How this site trains a hop: in this process, or with several local workers.

    Example::

        [training]
        parallel_plan = "ddp"
        workers = 2
        launcher = "torchrun"
        checkpoint_every = 100
        restarts = 1

    A run plan's ``[training] parallel_plan`` other than ``"site"`` replaces
    ``parallel_plan`` for that run; ``workers`` and ``launcher`` stay the site's.
    """

    parallel_plan: str = "single"
    """``single`` trains in the daemon's process (the simulator's exact arithmetic);
    ``ddp``, ``fsdp``, ``tp``, ``fsdp_tp`` or ``pp`` (pipeline: the model's layers cut into
    one stage per worker) spread the hop over ``workers`` CPU processes (gloo); ``auto``
    picks a plan from ``workers`` and the model's size (never ``pp``)."""
    workers: int = 1
    """Local worker processes for a plan other than ``single``; on CUDA, one per GPU (at
    most the GPUs of the machine)."""
    device: str = "auto"
    """``cuda`` trains the workers on GPUs (NCCL, bf16 autocast), even a ``single`` plan
    (then one worker in the daemon's process); ``cpu`` on CPUs (gloo; a ``single`` plan
    runs the simulator's exact in-process trainer); ``auto`` is ``cuda`` where torch sees
    a GPU, else ``cpu``."""
    launcher: str = "torchrun"
    """``torchrun`` starts the workers as ``torchrun --standalone``; ``fork`` forks them
    from the daemon (CPU only, starts faster)."""
    checkpoint_every: int = 100
    """Optimizer steps between within-hop checkpoints, of every plan: the in-process
    trainer's (model, optimizer, steps, losses and RNG states) and the workers' (sharded
    as trained). A hop interrupted by the daemon stopping or being killed, or by a crashed
    worker, resumes from the newest one and hands on exactly the model of an
    uninterrupted hop. Checkpoints are private files in the hop's job directory, deleted
    when the hop's training ends. 0: no checkpoints (a stopped hop trains again from step 0)."""
    restarts: int = 1
    """Times a hop's workers are started again, from the newest checkpoint, after a
    worker crashed (killed, or lost a peer); a Baton error (bad data, a diverged loss)
    is never retried."""
    nodes: int = 1
    """Machines of this site that train each hop together, this one included, each with
    ``workers`` workers. The others run ``site-node worker-node --shared-dir ...``; see
    ``site_node.parallel.nodes``."""
    rendezvous: str = ""
    """With ``nodes`` > 1: ``host:port`` of the rendezvous store this machine hosts for
    the others (torchrun's c10d rendezvous); internal network only."""
    shared_dir: Path | None = None
    """With ``nodes`` > 1: a directory every node mounts at the same path; hops' jobs
    (plaintext weights, private 0700) live there while they train."""
    node_address: str = ""
    """With ``nodes`` > 1: this machine's address for the other nodes' workers (empty:
    its host name)."""
    join_timeout_seconds: float = 300.0
    """With ``nodes`` > 1: how long a hop waits for every node to join."""
    stale_job_hours: float = 72.0
    """At start-up the daemon removes the job directories of interrupted hops unchanged
    for this long (their plaintext weights and checkpoints): hops whose run ended before
    they were delivered again."""

    def __post_init__(self) -> None:
        if self.parallel_plan not in PARALLEL_PLANS:
            raise ValueError(
                f"'parallel_plan' must be one of {', '.join(PARALLEL_PLANS)}, "
                f"not {self.parallel_plan!r}"
            )
        if self.workers < 1:
            raise ValueError(f"'workers' must be at least 1, not {self.workers}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(
                f"'launcher' must be one of {', '.join(LAUNCHERS)}, not {self.launcher!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"'device' must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"'checkpoint_every' must not be negative, not {self.checkpoint_every}"
            )
        if self.restarts < 0:
            raise ValueError(f"'restarts' must not be negative, not {self.restarts}")
        if self.nodes < 1:
            raise ValueError(f"'nodes' must be at least 1, not {self.nodes}")
        if self.nodes > 1 and (not self.rendezvous or self.shared_dir is None):
            raise ValueError("'nodes' > 1 needs 'rendezvous' (host:port) and 'shared_dir'")
        if self.nodes > 1:
            Rendezvous(endpoint=self.rendezvous, nodes=self.nodes, id="-")  # checks the address
        if self.nodes > 1 and self.launcher != "torchrun":
            raise ValueError("'nodes' > 1 needs the torchrun launcher")
        if not self.join_timeout_seconds > 0:
            raise ValueError("'join_timeout_seconds' must be positive")
        if not self.stale_job_hours > 0:
            raise ValueError("'stale_job_hours' must be positive")
        if self.parallel_plan not in ("auto", "single") and self.workers * self.nodes < 2:
            raise ValueError(
                f"'parallel_plan' {self.parallel_plan!r} needs 'workers' of at least 2"
            )

    @property
    def total_workers(self) -> int:
        """Workers over all of this site's nodes."""
        return self.workers * self.nodes

    def node_group(self) -> NodeGroup | None:
        """The site's machines, when it has several."""
        if self.nodes < 2 or self.shared_dir is None:
            return None
        return NodeGroup(
            nodes=self.nodes,
            endpoint=self.rendezvous,
            shared_dir=self.shared_dir,
            local_addr=self.node_address,
            join_timeout_s=self.join_timeout_seconds,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteMetricsConfig:
    """The ``[metrics]`` table: a Prometheus endpoint (plain HTTP), off by default.

    Example::

        [metrics]
        listen = "127.0.0.1:9465"
    """

    listen: str = ""
    """Address of ``/metrics`` (``host:port``; port 0 picks a free one); empty: off. It
    shows hop counts, durations, bytes, samples/s and rejection categories, never run ids,
    names, keys or data; keep it local or reachable by the scraper alone."""

    def __post_init__(self) -> None:
        check_listen("metrics.listen", self.listen)


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteConfig:
    """Everything ``site-node run`` needs.

    Example::

        coordinator = "coordinator.example.org:7443"
        data_dir = "data"
        work_dir = "work"

        [tls]
        ca = "pki/ca.pem"
        cert = "pki/hospital-1.pem"
        key = "pki/hospital-1.key"
    """

    coordinator: str
    """Coordinator address, ``host:port``. The site only ever dials out to it."""
    tls: TlsFiles
    """The site's client certificate, its key, and the pinned federation CA."""
    crl: Path | None = None
    """The federation's certificate revocation list (signed by the CA, re-read when it
    changes); a site never accepts a model from, nor seals one to, a revoked party."""
    keys_dir: Path = Path("keys")
    """The site's application keys: ``signing.key`` and ``encryption.key`` (private, 0600)
    with their certificates ``signing.pem`` and ``encryption.pem`` from the federation CA."""
    server_name: str = ""
    """Name to expect in the coordinator's certificate when it differs from the host dialled."""
    data_dir: Path = Path("data")
    """The site's own dataset (``train.csv``, ``val.csv``, ``schema.json``); nothing else."""
    work_dir: Path = Path("work")
    """Private scratch space for models in transit (mode 0700)."""
    heartbeat_seconds: float = 5.0
    """Interval between lease renewals."""
    torch_threads: int = 0
    """Threads torch may use for training; 0 keeps torch's default."""
    retry_initial_seconds: float = 0.5
    """First back-off delay when the coordinator is unreachable; doubles each time."""
    retry_max_seconds: float = 30.0
    """Largest back-off delay."""
    training: SiteTraining = SiteTraining()
    """How hops train here (``[training]``); the default trains in this process."""
    data: GatePolicy = field(default_factory=GatePolicy)
    """What the data gate fails and what it only warns about (``[data]``); every hop and
    ``site-node check-data`` run it on ``data_dir`` before training."""
    metrics: SiteMetricsConfig = SiteMetricsConfig()
    """The Prometheus endpoint (``[metrics]``); off unless ``listen`` is set."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Liveness and readiness probes (``[probe]``); off unless ``listen`` is set. Ready
    means registered with the coordinator."""

    def __post_init__(self) -> None:
        if ":" not in self.coordinator:
            raise ValueError(f"'coordinator' must be host:port, not {self.coordinator!r}")
        if self.heartbeat_seconds <= 0:
            raise ValueError(f"'heartbeat_seconds' must be positive, not {self.heartbeat_seconds}")
        if self.torch_threads < 0:
            raise ValueError(f"'torch_threads' must not be negative, not {self.torch_threads}")
        if not 0 < self.retry_initial_seconds <= self.retry_max_seconds:
            raise ValueError("need 0 < 'retry_initial_seconds' <= 'retry_max_seconds'")


def load_site_config(path: Path) -> SiteConfig:
    """Loads a site config, resolving relative paths against the file's directory.

    Raises:
        ConfigError: The file is missing, not TOML, or its keys or values are invalid.
    """
    return load(SiteConfig, path)
