"""Checks at submit of what a run plan asks of the model registry: its model and parallel plan.

A plan's model is built at the first hop from the task's schema, which only the sites
have. :func:`check_model` builds it earlier, at ``baton submit``, on PyTorch's ``meta``
device (shapes only: no memory, no weights drawn) and with placeholder widths, so the
family's own argument checks (:func:`baton.ml.models.build_model`) refuse a bad argument
before any round trip; a family's :class:`~baton.ml.families.Family` then says whether the
parallel plan the run asks for can train the model at all.

The placeholders stand in for the input width (:data:`PLACEHOLDER_FEATURES`) and the
classes (:data:`PLACEHOLDER_CLASSES`) that nobody knows at submit. No family's argument
checks, tensor-parallel degrees or pipeline stages depend on them; whatever does depend on
the data (a language model on a task that is not a token task, a global batch larger than
a site's training split) is still checked by each site at the hop. A pretrained model
(``hf_causal_lm``) is built from a checkpoint only the sites hold: its arguments alone are
checked (:func:`baton.ml.llm.args.arg_problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from baton.config import where_key
from baton.errors import ConfigError, ModelError
from baton.ml.families import Family, families_for, family
from baton.ml.llm.args import FAMILY as PRETRAINED
from baton.ml.llm.args import arg_problem
from baton.ml.models import build_model
from baton.ml.plans import PlanKind

if TYPE_CHECKING:
    from baton.plan import RunPlan

__all__ = ["PLACEHOLDER_CLASSES", "PLACEHOLDER_FEATURES", "check_model", "meta_model"]

PLACEHOLDER_FEATURES = 1
"""Input width (context length of a language model) of the model built at submit, in
place of the task's, which comes from the sites' data."""
PLACEHOLDER_CLASSES = 2
"""Output width (vocabulary of a language model) of the model built at submit, in place of
the task's, which comes from the sites' data."""

_TENSOR_PARALLEL = (PlanKind.TP, PlanKind.FSDP_TP)
"""Plans that split layers over workers: they need a tensor-parallel degree."""


class _SkipInit(TorchFunctionMode):
    """Skips :mod:`torch.nn.init`: a ``meta`` tensor holds no values to draw, and drawing
    them anyway goes through decompositions that take seconds to import at submit."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def meta_model(name: str, args: Mapping[str, Any]) -> nn.Module:
    """The model ``name`` with ``args``, built on the ``meta`` device at the placeholder widths.

    Raises:
        ModelError: The registry refuses the name or the arguments.
    """
    with torch.device("meta"), _SkipInit():
        return build_model(
            name,
            args,
            num_features=PLACEHOLDER_FEATURES,
            num_classes=PLACEHOLDER_CLASSES,
            seed=0,
        )


def check_model(plan: RunPlan, *, source: str) -> None:
    """Checks the plan's model name, its arguments and its ``[training] parallel_plan``.

    Args:
        plan: The parsed plan.
        source: Where the plan comes from (its file), named first in every message.

    Raises:
        ConfigError: The registry refuses the model's name (``model.name``) or an argument
            (``model.args.<key>``, or ``model.args`` for arguments that clash), with the
            registry's own reason; or the model cannot be trained under the parallel plan
            the run asks every site for (``training.parallel_plan``).
    """
    name, args = plan.model.name, plan.model.args
    try:
        found = family(name)
    except ModelError as exc:
        raise ConfigError(f"{source}: 'model.name': {exc.message}") from None
    if name == PRETRAINED:  # built from a site's checkpoint: only its arguments are checked
        problem = arg_problem(args)
        if problem is not None:
            raise ConfigError(f"{source}: {where_key('model.args', problem[0])!r}: {problem[1]}")
    try:
        model = None if name == PRETRAINED else meta_model(name, args)
    except ModelError as exc:
        raise ConfigError(f"{source}: {_culprit(name, args, exc)!r}: {exc.message}") from None
    reason = _parallel_refusal(found, model, plan.training.parallel_plan)
    if reason:
        raise ConfigError(
            f"{source}: 'training.parallel_plan' is {plan.training.parallel_plan!r}, but {reason}"
        )


def _culprit(name: str, args: Mapping[str, Any], error: ModelError) -> str:
    """The key ``model.args.<key>`` whose value alone makes the build fail with ``error``,
    in the plan's order; ``model.args`` when none does (the arguments clash)."""
    for key, value in args.items():
        try:
            meta_model(name, {key: value})
        except ModelError as alone:
            if alone.message == error.message:
                return where_key("model.args", key)
    return "model.args"


def _parallel_refusal(found: Family, model: nn.Module | None, requested: str) -> str:
    """Why ``requested`` can never train ``model``, whatever a site's workers; "" if it can.

    ``site`` and ``auto`` leave the plan to each site, which picks one the family has.
    """
    if requested not in tuple(PlanKind):
        return ""
    kind = PlanKind(requested)
    if kind not in found.plans:
        return (
            f"model {found.name!r} cannot be trained under it; "
            f"plan {kind} trains: {', '.join(families_for(kind))}"
        )
    if model is None:
        return ""
    if kind in _TENSOR_PARALLEL and not found.tp_degrees(model):
        return f"model {found.name!r} with these arguments splits no layer over 2 or more workers"
    if kind is PlanKind.PP and not found.pp_degrees(model):
        return (
            f"model {found.name!r} with these arguments has {found.pp_units(model)} layer(s) "
            "to cut into stages; a pipeline needs 2 or more"
        )
    return ""
