"""The run plan: what a study owner asks the federation to train, loaded from TOML.

A plan looks like this (every key is documented on its dataclass field)::

    [run]
    name = "demo"
    seed = 0
    cycles = 3
    sites = ["hospital-1", "hospital-2", "hospital-3"]

    [model]
    name = "mlp"
    args = { hidden = [64] }

    [task]
    dataset = "breast_cancer"

    [ordering]
    strategy = "reshuffle"

    [training]
    optimizer = "sgd"
    lr = 0.05
    local_epochs = 2
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baton.config import build, parse_toml, read_text
from baton.plan_faults import FaultsSection
from baton.plan_names import check_names as check_names

SITE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""Site ids: lower-case letters, digits and dashes, as they appear in SPIFFE ids."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSection:
    """Who trains and how often."""

    name: str
    """Human-readable run name."""
    sites: tuple[str, ...]
    """Participating site ids; each trains once per cycle."""
    cycles: int = 1
    """Passes over all sites, in [1, 1000]."""
    seed: int = 0
    """Seed for model initialization, ordering and data shuffling, in [0, 2**63)."""
    evaluate_at_sites: bool = False
    """After the last hop, every site evaluates the final model on its validation split
    and the study owner sees each site's metrics (events ``SITE_EVALUATED``). The last
    hop is then sealed to every site of the plan as well as to the study owner, so every
    site can read the final model. Such a run can also serve as a probe run of a later
    run's ordering (``[ordering] probe_runs``)."""

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError("'sites' must name at least one site")
        for site in self.sites:
            if not SITE_ID_RE.match(site):
                raise ValueError(
                    f"site id {site!r} is invalid: use lower-case letters, digits and dashes"
                )
        if len(set(self.sites)) != len(self.sites):
            raise ValueError("'sites' names a site twice")
        _check_range("cycles", self.cycles, 1, 1000, "[]")
        _check_range("seed", self.seed, 0, 2**63, "[)")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSection:
    """Which registered model to train."""

    name: str
    """A name from the model registry (``baton.ml.models``)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the model's builder."""
    start_from: str = ""
    """Hop 0 starts from this model instead of the seed: the SHA-256 of the exact model
    file (``sha256:`` and 64 lower-case hex digits), e.g. one ``baton fetch RUN OUT --hop N``
    wrote; ``baton submit PLAN --start-from FILE`` seals that file to the plan's sites, and
    the first site refuses any other. Empty: hop 0 builds the model from the seed."""

    def __post_init__(self) -> None:
        _check_hash("start_from", self.start_from)


TASK_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
"""A task pin's content hash: ``sha256:`` and 64 lower-case hex digits."""

METRIC_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A metric's name as sites report it (``accuracy``, ``loss``, ``perplexity``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSection:
    """Which task the sites' data belongs to, and optionally the exact code that runs it.

    Task code is never sent to the sites: each site runs the task its own environment has
    installed (an entry point in the ``baton.tasks`` group). The three pin keys, all or
    none, name that code; ``baton task hash NAME`` prints them for the installed task. A
    site whose installed task has another pin refuses the hop before downloading anything,
    and ``baton submit`` checks the pin against the owner's own installation first. The
    pin is part of the plan text, so the owner's signature covers it.
    """

    dataset: str
    """An installed task's name, from the ``baton.tasks`` entry points
    (``baton task list``; the simulations bring ``breast_cancer``, ``digits``, ``wine``,
    ``tokens``)."""
    distribution: str = ""
    """The distribution that provides the task, e.g. ``baton-fl``. Empty: not pinned."""
    version: str = ""
    """That distribution's version, e.g. ``0.1.0``. Empty: not pinned."""
    sha256: str = ""
    """Content hash of the distribution's installed files, ``sha256:`` and 64 lower-case
    hex digits (see :mod:`baton.ml.tasks` for what it covers). Empty: not pinned."""
    metric: str = "accuracy"
    """The task's primary metric, as its sites report it (``loss``, ``perplexity``...): what
    ordering strategies rank sites by and what reports show. It MUST be the installed
    task's primary metric; ``baton submit`` checks it."""
    higher_is_better: bool = True
    """Whether a higher ``metric`` is better (``false`` for ``perplexity``). It MUST match
    the installed task's primary metric; ``baton submit`` checks it."""

    def __post_init__(self) -> None:
        if not METRIC_NAME_RE.match(self.metric):
            raise ValueError(
                f"'metric' must be 1 to 64 letters, digits, '_', '.' or '-', not {self.metric!r}"
            )
        pin = {"distribution": self.distribution, "version": self.version, "sha256": self.sha256}
        missing = [key for key, value in pin.items() if not value]
        if missing and len(missing) < len(pin):
            raise ValueError(
                f"a task pin needs all of 'distribution', 'version' and 'sha256'; "
                f"missing {', '.join(repr(key) for key in missing)}"
            )
        _check_hash("sha256", self.sha256)


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderingSection:
    """How the coordinator chooses the order of sites."""

    strategy: str = "learned"
    """A strategy name from ``ordering.known_strategies()``: ``fixed``, ``random``,
    ``reshuffle``, ``by_size``, ``typicality``, ``path``, ``greedy_loss``, ``learned``.
    The default, ``learned``, is ``reshuffle`` until it has observations (probe runs,
    or a few cycles of this run), then the order its surrogate ranks best."""
    options: dict[str, Any] = field(default_factory=dict)
    """Strategy-specific options."""
    probe_runs: tuple[str, ...] = ()
    """Ids of earlier runs over the same sites, made with ``evaluate_at_sites``: each
    gives the strategy one probe, its first cycle's order and the final model's
    validation metrics averaged over the sites (weighted by their validation examples).
    The ``learned`` strategy fits its surrogate to them."""


PARALLEL_PLANS = ("site", "single", "auto", "ddp", "fsdp", "tp", "fsdp_tp", "pp")
"""Values of ``[training] parallel_plan`` in a run plan."""


_TRAINING_RANGES: tuple[tuple[str, float, float, str], ...] = (
    ("lr", 0, 10, "(]"),
    ("momentum", 0, 1, "[)"),
    ("weight_decay", 0, 1, "[]"),
    ("batch_size", 1, 65_536, "[]"),
    ("local_epochs", 0, 1_000, "[]"),
    ("local_steps", 0, 10_000_000, "[]"),
    ("reference_examples", 0, 1_000_000_000, "[]"),
    ("lr_min_ratio", 0, 1, "(]"),
    ("cycle_decay", 0, 1, "(]"),
    ("proximal_mu", 0, 1_000, "[]"),
)
"""Range of every numeric ``[training]`` value (key, low, high, open/closed ends), checked
at submit so no site trains on a value it cannot survive (NaN and inf fit no range)."""


def _check_hash(key: str, value: str) -> None:
    """Raises ValueError naming ``key`` unless ``value`` is empty or a ``sha256:`` pin."""
    if value and not TASK_HASH_RE.match(value):
        raise ValueError(f"'{key}' must be 'sha256:' and 64 lower-case hex digits, not {value!r}")


def _check_range(key: str, value: float, low: float, high: float, brackets: str) -> None:
    """Raises ValueError naming ``key`` and its range when ``value`` lies outside it."""
    low_ok = value > low if brackets[0] == "(" else value >= low
    if not (low_ok and (value < high if brackets[1] == ")" else value <= high)):
        raise ValueError(f"'{key}' must be in {brackets[0]}{low}, {high}{brackets[1]}, not {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingSection:
    """Local training at each hop, and the remedies against catastrophic forgetting.

    In sequential training the sites trained last dominate the final model. Five remedies
    are available, each independent and all off by default (the defaults train exactly as
    plain sequential SGD does):

    - ``proportional_steps`` with ``reference_examples``: local steps proportional to the
      site's size (Balachandar et al. 2020), so a small site cannot overwrite what larger
      ones taught. Each site scales by its own size over the reference; no site ever
      needs another site's data.
    - ``lr_schedule = "cyclical"`` with ``lr_min_ratio``: the learning rate falls along
      each cycle (cosine, from ``lr`` at the cycle's first hop to ``lr * lr_min_ratio`` at
      its last), so the last sites of a cycle move the model less.
    - ``cycle_decay``: the learning rate also falls from cycle to cycle (every hop of
      cycle ``c`` trains at ``cycle_decay ** c`` times its rate), so later cycles refine
      the model rather than rewrite it. Composes with either ``lr_schedule``.
    - ``proximal_mu``: a FedProx-style penalty ``mu / 2 * ||w - w_incoming||^2`` that ties
      each hop to the weights it received (a light form of EWC).
    - More frequent transfer: more ``run.cycles`` with fewer ``local_epochs`` or
      ``local_steps`` keeps the total compute and hands the model on more often. Nothing
      extra is needed: set those two keys.
    """

    optimizer: str = "sgd"
    """``sgd`` or ``adam``."""
    lr: float = 0.05
    """Learning rate, in (0, 10]."""
    momentum: float = 0.9
    """SGD momentum, in [0, 1) (ignored by Adam)."""
    weight_decay: float = 0.0
    """L2 weight decay, in [0, 1] (0 under Adam with a parallel plan)."""
    batch_size: int = 32
    """Examples per optimizer step, in [1, 65536]."""
    local_epochs: int = 2
    """Passes over the training split per hop, in [0, 1000] (unused if ``local_steps`` > 0)."""
    local_steps: int = 0
    """Optimizer steps per hop, in [0, 10**7]; 0 means use ``local_epochs``."""
    logit_adjustment: bool = True
    """Train on ``cross_entropy(logits + log(local label prior))`` (logit adjustment), so a
    site that holds mostly one class does not pull the travelling model toward predicting
    that class everywhere; predictions use the raw logits. False: plain cross-entropy."""
    proportional_steps: bool = False
    """Scale each hop's steps by the site's size: a site with ``n`` training examples
    trains ``max(1, round(base * n / reference_examples))`` steps, where ``base`` is
    ``local_steps`` or, with ``local_epochs``, the steps of those epochs over
    ``reference_examples`` examples. Mostly useful with ``local_steps``: epochs already
    give steps roughly proportional to size. Needs ``reference_examples``."""
    reference_examples: int = 0
    """The size a site is compared with under ``proportional_steps``, normally the
    federation's mean training-set size: the study owner sets it from the sizes the sites
    publish in their profiles. 0: not set (``proportional_steps`` is then refused)."""
    lr_schedule: str = "constant"
    """``constant``: every hop trains at ``lr``. ``cyclical``: hop ``h`` of a run over
    ``K`` sites trains at ``lr * (r + (1 - r) * (1 + cos(pi * p / (K - 1))) / 2)`` with
    ``p = h mod K`` its position in the cycle and ``r = lr_min_ratio``: ``lr`` at the
    first hop of each cycle, ``lr * lr_min_ratio`` at the last."""
    lr_min_ratio: float = 0.1
    """The last hop's share of ``lr`` in a ``cyclical`` schedule, in (0, 1]."""
    cycle_decay: float = 1.0
    """Decay of the learning rate across cycles, in (0, 1]: every hop of cycle ``c``
    (0-based, ``c = h // K`` for hop ``h`` of a run over ``K`` sites) trains at
    ``cycle_decay ** c`` times the rate ``lr_schedule`` gives it. 1: no decay."""
    proximal_mu: float = 0.0
    """Strength ``mu`` of the proximal penalty ``mu / 2 * ||w - w_incoming||^2`` added to
    the training loss, where ``w_incoming`` are the weights the hop received (the
    trainable parameters only), in [0, 1000]. 0 disables it."""
    parallel_plan: str = "site"
    """How each site spreads its hop over its local workers: ``site`` (default) leaves it
    to each site's own ``[training] parallel_plan``; ``single`` trains in each daemon's
    process, with exactly the simulator's arithmetic; ``auto``, ``ddp``, ``fsdp``, ``tp``,
    ``fsdp_tp`` or ``pp`` (pipeline) ask every site for that plan over the workers it has
    (a site with one worker fails the hop for a plan that needs several). These plans
    train without ``proximal_mu`` and run ``adam`` only without ``weight_decay``."""

    def __post_init__(self) -> None:
        if self.parallel_plan not in PARALLEL_PLANS:
            raise ValueError(
                f"'parallel_plan' must be one of {', '.join(PARALLEL_PLANS)}, "
                f"not {self.parallel_plan!r}"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"'optimizer' must be 'sgd' or 'adam', not {self.optimizer!r}")
        for key, low, high, brackets in _TRAINING_RANGES:
            _check_range(key, getattr(self, key), low, high, brackets)
        if self.local_epochs < 1 and self.local_steps < 1:
            raise ValueError("one of 'local_epochs' or 'local_steps' must be at least 1")
        if self.proportional_steps and self.reference_examples < 1:
            raise ValueError(
                "'proportional_steps' needs 'reference_examples' (the federation's mean "
                "training-set size, from the published profiles) to be at least 1"
            )
        if self.lr_schedule not in ("constant", "cyclical"):
            raise ValueError(
                f"'lr_schedule' must be 'constant' or 'cyclical', not {self.lr_schedule!r}"
            )
        self._check_parallel_training()

    def _check_parallel_training(self) -> None:
        """Refuses what the sites' parallel workers cannot train, when the plan asks every
        site for a parallel plan (``site`` leaves the choice to each site, which checks
        it at the hop; ``single`` trains in the daemon's process, which can)."""
        if self.parallel_plan in ("site", "single"):
            return
        plan = f"'parallel_plan' {self.parallel_plan!r}"
        if self.proximal_mu > 0:
            raise ValueError(
                f"{plan} has no proximal penalty: set 'proximal_mu' to 0 or "
                "'parallel_plan' to 'single'"
            )
        if self.optimizer == "adam" and self.weight_decay != 0:
            raise ValueError(
                f"{plan} runs 'adam' only without weight decay: set 'weight_decay' to 0, "
                "'optimizer' to 'sgd' or 'parallel_plan' to 'single'"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class SecuritySection:
    """What sites accept from each other."""

    max_weight_norm: float = 1e6
    """Largest L2 norm of all weights together that a site accepts from the previous hop;
    a larger model is rejected before any training (a crude guard against blown-up or
    maliciously scaled weights)."""
    escrow_to_owner: bool = False
    """Also wrap every hop's content key to the study owner, who can then open (and audit)
    any intermediate model, not only the final one. Off by default: the fewer parties can
    open a hop, the better."""

    def __post_init__(self) -> None:
        if not self.max_weight_norm > 0:
            raise ValueError(f"'max_weight_norm' must be positive, not {self.max_weight_norm}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunPlan:
    """A whole run plan."""

    run: RunSection
    """Sites, cycles, seed."""
    model: ModelSection
    """The model to train."""
    task: TaskSection
    """The data task."""
    ordering: OrderingSection = field(default_factory=OrderingSection)
    """How to order the sites."""
    training: TrainingSection = field(default_factory=TrainingSection)
    """Local training policy."""
    security: SecuritySection = field(default_factory=SecuritySection)
    """What sites accept from each other."""
    faults: FaultsSection = field(default_factory=FaultsSection)
    """What the coordinator does when a site is lost or a hop fails."""

    @property
    def total_hops(self) -> int:
        """Number of hops the run makes: every site once per cycle."""
        return self.run.cycles * len(self.run.sites)


def load_plan(path: Path) -> RunPlan:
    """Loads and validates a run plan file."""
    return parse_plan(read_plan_text(path), source=str(path))


def read_plan_text(path: Path) -> str:
    """Reads a plan file's text, with a clear error if it cannot be read."""
    return read_text(path, what="plan file")


def parse_plan(text: str, *, source: str = "<plan>") -> RunPlan:
    """Parses and validates run plan text (as sent over the wire)."""
    return build(RunPlan, parse_toml(text, source=source), source=source, section="")


def plan_digest(text: str) -> str:
    """SHA-256 of the plan text as submitted: the identity of the plan."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
