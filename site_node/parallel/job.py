"""The job description a launcher hands its workers: a JSON file in the hop's private directory.

The private directory holds everything of one hop's training::

    job.json            this description
    inputs.sha256       digest of job, weights and data the checkpoints belong to
    model.safetensors   the incoming weights
    data.safetensors    the training split: ``x`` (inputs) and ``y`` (targets)
    progress.jsonl      rank 0's progress lines (one JSON object each)
    errors/rank-N.json  the reason rank N failed, if it did
    checkpoints/        within-hop checkpoints (safetensors shards and JSON indexes)
    result.safetensors  the trained full state, written atomically by rank 0
    result.json         what training did (steps, losses, throughput), written last
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from site_node.parallel.plans import ParallelPlan, PlanKind

JOB_FILE = "job.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    """Which model to build (the weights come from the job's weights file)."""

    name: str
    """A registered model name, or ``causal_lm``."""
    args: dict[str, Any] = field(default_factory=dict)
    """The builder's keyword arguments."""
    num_features: int
    """Input width (context length for ``causal_lm``)."""
    num_classes: int
    """Output width (vocabulary size for ``causal_lm``)."""
    checkpoint: str = ""
    """The site's pretrained checkpoint directory the model builds on (``hf_causal_lm``);
    empty for a model built from its arguments alone."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainSpec:
    """How to train: the global batch is the same whatever the plan."""

    optimizer: str = "sgd"
    """``sgd`` or ``adamw``."""
    lr: float = 0.05
    """Learning rate."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """Weight decay."""
    batch_size: int = 32
    """Global batch: examples per optimizer step over all data-parallel workers together;
    each worker takes ``batch_size / dp``. Incomplete batches are dropped."""
    steps: int = 10
    """Optimizer steps of the hop."""
    seed: int = 0
    """Seed of the example order (``DistributedSampler``) and of dropout."""
    logit_adjustment: bool = False
    """Classification only: train on ``logits + log(local label prior)`` as
    ``baton.ml.trainer.train_local`` does."""

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"'optimizer' must be 'sgd' or 'adamw', not {self.optimizer!r}")
        if not self.lr > 0 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("'lr', 'batch_size' and 'steps' must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One hop's training at a site."""

    model: ModelSpec
    """The model."""
    training: TrainSpec
    """The training policy."""
    plan: ParallelPlan
    """The parallel plan; ``plan.world_size`` workers run it."""
    workdir: str
    """The hop's private directory (see the module docstring)."""
    device: str = "cpu"
    """``cpu`` (gloo) or ``cuda`` (NCCL, bf16 autocast)."""
    checkpoint_every: int = 0
    """Steps between within-hop checkpoints; 0: none."""
    broadcast_from_rank0: bool = True
    """Rank 0 reads the weights and broadcasts them; False: every rank reads them."""
    timeout_s: float = 300.0
    """Timeout of every collective: a lost peer fails the hop after this long at most."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"'device' must be 'cpu' or 'cuda', not {self.device!r}")
        if self.checkpoint_every < 0 or not self.timeout_s > 0:
            raise ValueError("'checkpoint_every' must be >= 0 and 'timeout_s' positive")
        if self.training.batch_size % self.plan.dp != 0:
            raise ValueError(
                f"the global batch {self.training.batch_size} does not divide among "
                f"{self.plan.dp} data-parallel workers"
            )

    @property
    def dir(self) -> Path:
        """The private directory."""
        return Path(self.workdir)

    @property
    def weights_path(self) -> Path:
        """Incoming weights."""
        return self.dir / "model.safetensors"

    @property
    def data_path(self) -> Path:
        """Training data."""
        return self.dir / "data.safetensors"

    @property
    def progress_path(self) -> Path:
        """Rank 0's progress lines."""
        return self.dir / "progress.jsonl"

    @property
    def errors_dir(self) -> Path:
        """Per-rank failure reasons."""
        return self.dir / "errors"

    @property
    def checkpoint_dir(self) -> Path:
        """Within-hop checkpoints."""
        return self.dir / "checkpoints"

    @property
    def output_path(self) -> Path:
        """The trained full state."""
        return self.dir / "result.safetensors"

    @property
    def result_path(self) -> Path:
        """What training did."""
        return self.dir / "result.json"

    def to_json(self) -> str:
        """The job as JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Job:
        """Parses :meth:`to_json` output.

        Raises:
            ValueError: The text is not a valid job.
        """
        raw = json.loads(text)
        plan = raw.pop("plan")
        return Job(
            model=ModelSpec(**raw.pop("model")),
            training=TrainSpec(**raw.pop("training")),
            plan=ParallelPlan(
                kind=PlanKind(plan["kind"]),
                dp=plan["dp"],
                tp=plan["tp"],
                pp=plan.get("pp", 1),  # absent from jobs written before pipeline plans
            ),
            **raw,
        )

    @staticmethod
    def read(path: Path) -> Job:
        """Reads a job file."""
        return Job.from_json(path.read_text(encoding="utf-8"))
