"""A run's result that describes itself: the metadata in its safetensors file, and a rebuild
of a tabular model from that file alone, in plain ``torch.nn``.

Every hop's output model carries, in its safetensors ``__metadata__`` (string to string):

| key               | value                                                        |
|-------------------|--------------------------------------------------------------|
| ``baton.format``  | ``"1"``                                                      |
| ``baton.task``    | the plan's task name                                         |
| ``baton.task_pin``| the plan's task pin as JSON, or empty when it pins nothing   |
| ``baton.model``   | the model's registry name (``mlp``, ``logreg``, ...)         |
| ``baton.model_args`` | the model's arguments, canonical JSON                    |
| ``baton.inputs``  | JSON list of the input columns, in the model's input order   |
| ``baton.classes`` | JSON list of the class names, in output order (empty where   |
|                   | the schema names them by digest: a language model's vocabulary) |
| ``baton.schema``  | the task schema's JSON                                       |
| ``baton.run_id``, ``baton.plan_hash``, ``baton.hop`` | the run, its plan, the hop index |

:func:`load` rebuilds ``mlp`` and ``logreg`` models without Baton's model registry, so a
fetched result evaluates with nothing but torch and this module::

    model, meta = load("model.safetensors")
    probs = model(x).softmax(-1)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.codec import load_into, load_metadata_file, load_state_file

if TYPE_CHECKING:
    from baton.domain import Assignment
    from baton.ml.data import Schema
    from baton.plan import RunPlan

__all__ = ["FORMAT", "PORTABLE_MODELS", "Classifier", "ResultMetadata", "load", "result_metadata"]

FORMAT = "1"
"""The metadata format this module writes and reads (``baton.format``)."""
PORTABLE_MODELS = ("mlp", "logreg")
"""The models :func:`load` can rebuild."""
_KEYS = ("task", "task_pin", "model", "model_args", "inputs", "classes", "schema")
_LAYER = re.compile(r"^body\.(\d+)\.weight$")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def result_metadata(plan: RunPlan, schema: Schema, a: Assignment, plan_hash: str) -> dict[str, str]:
    """The metadata the output model of hop ``a`` carries (the table in this module's
    docstring); ``plan_hash`` is the digest of the signed ``plan``."""
    task = plan.task
    pin = (
        _canonical(
            {"distribution": task.distribution, "version": task.version, "sha256": task.sha256}
        )
        if task.sha256
        else ""
    )
    return {
        "baton.format": FORMAT,
        "baton.task": task.dataset,
        "baton.task_pin": pin,
        "baton.model": plan.model.name,
        "baton.model_args": _canonical(plan.model.args),
        "baton.inputs": _canonical(list(schema.input_names)),
        "baton.classes": _canonical(list(schema.class_names)),
        "baton.schema": schema.to_json(),
        "baton.run_id": a.run_id,
        "baton.plan_hash": plan_hash,
        "baton.hop": str(a.hop_index),
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultMetadata:
    """A result file's metadata, parsed."""

    task: str
    """The task the model was trained for."""
    task_pin: dict[str, str] | None
    """The plan's pin of the task's code (``distribution``, ``version``, ``sha256``)."""
    model: str
    """The model's registry name."""
    model_args: dict[str, Any]
    """The model's arguments."""
    inputs: tuple[str, ...]
    """Input column names, in the order the model reads them."""
    classes: tuple[str, ...]
    """Class names, in the order of the model's outputs."""
    schema: str
    """The task schema's JSON."""
    run_id: str
    """The run that trained the model."""
    plan_hash: str
    """Digest of the signed plan of that run."""
    hop: int
    """Index of the hop that produced this file."""

    @classmethod
    def parse(cls, meta: Mapping[str, str], *, source: str) -> ResultMetadata:
        """Parses the ``baton.*`` metadata; ``source`` names the file in errors.

        Raises:
            ModelError: The format is missing or another, or a key is missing or malformed.
        """
        if meta.get("baton.format") != FORMAT:
            raise ModelError(
                f"{source}: no Baton result metadata of format {FORMAT} "
                f"(found {meta.get('baton.format', 'none')!r})"
            )
        missing = [k for k in (*_KEYS, "run_id", "plan_hash", "hop") if f"baton.{k}" not in meta]
        if missing:
            raise ModelError(f"{source}: metadata key 'baton.{missing[0]}' is missing")
        try:
            pin = json.loads(meta["baton.task_pin"]) if meta["baton.task_pin"] else None
            args, inputs, classes = (
                json.loads(meta[f"baton.{k}"]) for k in ("model_args", "inputs", "classes")
            )
            hop = int(meta["baton.hop"])
        except ValueError:
            raise ModelError(f"{source}: malformed Baton metadata") from None
        if not (
            isinstance(args, dict)
            and (pin is None or isinstance(pin, dict))
            and _names(inputs)
            and _names(classes)
        ):
            raise ModelError(f"{source}: malformed Baton metadata")
        return cls(
            task=meta["baton.task"],
            task_pin=pin,
            model=meta["baton.model"],
            model_args=args,
            inputs=tuple(inputs),
            classes=tuple(classes),
            schema=meta["baton.schema"],
            run_id=meta["baton.run_id"],
            plan_hash=meta["baton.plan_hash"],
            hop=hop,
        )


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(n, str) for n in value)


class Standardize(nn.Module):
    """``(x - mean) / std`` per input column; a missing value (NaN) becomes 0, the mean."""

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.register_buffer("fitted", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized ``x``, NaN imputed."""
        z = (x - self.mean) / self.std
        return z.masked_fill(z.isnan(), 0.0)


class Classifier(nn.Module):
    """Standardized inputs into a network of ``torch.nn`` layers; class logits out.

    Its state dict has the keys of the Baton model it rebuilds (``input_norm.*``, then
    ``body.*`` for an ``mlp``, ``linear.*`` for a ``logreg``).
    """

    def __init__(self, width: int, net_name: str, net: nn.Module) -> None:
        super().__init__()
        self.input_norm = Standardize(width)
        self.add_module(net_name, net)
        self._net_name = net_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits ``[n, classes]``."""
        out: torch.Tensor = self.get_submodule(self._net_name)(self.input_norm(x))
        return out


def _mlp_body(state: Mapping[str, torch.Tensor], meta: ResultMetadata, source: str) -> nn.Module:
    """``Linear -> ReLU (-> Dropout)`` groups at the indices the state dict names."""
    width, classes, args = len(meta.inputs), len(meta.classes), meta.model_args
    found = sorted((int(m[1]), k) for k in state if (m := _LAYER.match(k)))
    if not found:
        raise ModelError(f"{source}: an 'mlp' without linear layers")
    shapes = {i: state[k].shape for i, k in found}
    if any(len(s) != 2 for s in shapes.values()):
        raise ModelError(f"{source}: an 'mlp' layer weight is not a matrix")
    hidden = [int(shapes[i][0]) for i, _ in found[:-1]]
    if (int(shapes[found[0][0]][1]), int(shapes[found[-1][0]][0])) != (width, classes):
        raise ModelError(f"{source}: the layers do not map {width} inputs to {classes} classes")
    if hidden != list(args.get("hidden", [64])):
        raise ModelError(f"{source}: layer widths {hidden} disagree with the model arguments")
    dropout = float(args.get("dropout", 0.0))
    layers: list[nn.Module] = []
    for index in range(found[-1][0] + 1):
        if index in shapes:
            out_width, in_width = shapes[index]
            layers.append(nn.Linear(int(in_width), int(out_width)))
        elif index - 1 in shapes:
            layers.append(nn.ReLU())
        else:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def load(path: str | Path) -> tuple[nn.Module, ResultMetadata]:
    """Rebuilds the model in a Baton result file, in evaluation mode, from the file alone.

    Reads safetensors only (never pickle); the weights load strictly (every key, shape and
    dtype as rebuilt, finite values).

    Raises:
        ModelError: The file is unreadable, carries no Baton metadata of this format,
            holds a model other than ``mlp`` or ``logreg``, or weights that do not fit it.
    """
    path = Path(path)
    meta = ResultMetadata.parse(load_metadata_file(path), source=str(path))
    if meta.model not in PORTABLE_MODELS:
        raise ModelError(
            f"{path}: model {meta.model!r} has no plain-torch rebuild "
            f"(only {', '.join(PORTABLE_MODELS)}); build it with baton.ml.models.build_model"
        )
    state = load_state_file(path)
    width, classes = len(meta.inputs), len(meta.classes)
    net: nn.Module
    if meta.model == "mlp":
        net_name, net = "body", _mlp_body(state, meta, str(path))
    else:
        net_name, net = "linear", nn.Linear(width, classes)
    model = Classifier(width, net_name, net)
    load_into(model, state)
    return model.eval(), meta
