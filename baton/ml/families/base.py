"""What a model family declares: its builder, its arguments and its parallel plans."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from baton.errors import ModelError, PlanError
from baton.ml.plans import PlanKind

if TYPE_CHECKING:
    from torch.distributed.tensor.parallel import ParallelStyle

DATA_PARALLEL = frozenset({PlanKind.SINGLE, PlanKind.DDP, PlanKind.FSDP})
"""The plans every family supports: they replicate or shard whole tensors."""
ALL_PLANS = frozenset(PlanKind)
"""Every plan: for a family with a tensor-parallel plan and pipeline stages."""


class Family:
    """A model family: how to build its models and how they may be spread over workers.

    A subclass sets the class attributes and overrides :meth:`build`, and overrides the
    parallel hooks for the plans it lists in :attr:`plans`. The defaults describe a family
    with neither a tensor-parallel plan nor pipeline stages, sharded by FSDP as one unit.

    Constraints: a family listing ``tp`` or ``fsdp_tp`` MUST return a plan from
    :meth:`tp_plan`; one listing ``pp`` MUST cut its models in :meth:`cut`.
    """

    name: ClassVar[str]
    """The registry name, as a run plan's ``model.name`` spells it."""
    args: ClassVar[tuple[str, ...]] = ()
    """The keyword arguments :meth:`build` accepts."""
    model_type: ClassVar[type[nn.Module]]
    """The class of the models it builds."""
    plans: ClassVar[frozenset[PlanKind]] = DATA_PARALLEL
    """The parallel plans that can train its models."""
    sequence: ClassVar[bool] = False
    """Whether its models predict the next token at every position of a window (logits
    ``[B, T, vocab]``) rather than one class per example (``[B, classes]``)."""

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Builds a model (the caller seeds the draw of its weights).

        Raises:
            ModelError: An argument has the wrong type or value.
        """
        raise NotImplementedError

    def own(self, model: nn.Module) -> nn.Module:
        """``model``, checked to be one of this family's.

        Raises:
            ModelError: It is not.
        """
        if not isinstance(model, self.model_type):
            raise ModelError(f"a {type(model).__name__} is not a {self.name!r} model")
        return model

    def tp_plan(self, model: nn.Module) -> dict[str, ParallelStyle] | None:
        """The tensor-parallel plan for ``parallelize_module``, or None without one."""
        return None

    def tp_degrees(self, model: nn.Module, limit: int = 64) -> tuple[int, ...]:
        """Tensor-parallel degrees (2 to ``limit``) the model supports; empty without a plan."""
        return ()

    def pp_units(self, model: nn.Module) -> int:
        """Units a pipeline cuts the model between (layers, blocks); 0 without stages."""
        return 0

    def pp_degrees(self, model: nn.Module) -> tuple[int, ...]:
        """Numbers of pipeline stages the model can be cut into: one unit per stage at least."""
        return tuple(range(2, self.pp_units(model) + 1))

    def pp_stages(self, model: nn.Module, pp: int) -> list[nn.Module]:
        """The model cut into ``pp`` pipeline stages, in order; stage ``i`` runs on rank ``i``.

        The stages share the model's submodules under the model's names, so their state
        dicts together hold every key of the model's, once.

        Raises:
            PlanError: The family has no pipeline plan, or not one of ``pp`` stages.
        """
        if pp not in self.pp_degrees(model):
            raise PlanError(f"the model has no pipeline plan of {pp} stages")
        return self.cut(model, pp)

    def cut(self, model: nn.Module, pp: int) -> list[nn.Module]:
        """The family's own cut behind :meth:`pp_stages` (``pp`` already checked)."""
        raise PlanError(f"model family {self.name!r} has no pipeline plan")

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """Submodules FSDP2 shards on their own (gathered one at a time); the root comes last."""
        return []

    def activation_bytes(
        self, model: nn.Module, *, batch: int, example_shape: tuple[int, ...]
    ) -> int:
        """A rough count of the activation bytes one global batch keeps for the backward
        pass: by default two float32 values per output of every weight matrix."""
        widths = [p.shape[0] for p in model.parameters() if p.ndim == 2]
        return 4 * batch * 2 * sum(widths)


def even_split(units: int, parts: int) -> list[range]:
    """``range(units)`` cut into ``parts`` consecutive runs whose lengths differ by one at
    most (the earlier runs take the extra units)."""
    size, extra = divmod(units, parts)
    runs, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        runs.append(range(start, stop))
        start = stop
    return runs
