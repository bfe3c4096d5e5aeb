"""The ``hf_causal_lm`` family: a pretrained Hugging Face causal LM that sites fine-tune.

Its models are built by the task ``causal_lm_finetune`` from the base checkpoint each site
holds (:mod:`baton.ml.llm`), never from the plan alone: :meth:`HFCausalLMFamily.build`
checks the arguments and refuses; :meth:`HFCausalLMFamily.build_on` builds on a site's
checkpoint (the site's parallel workers). Data-parallel plans train it: DDP in both
modes, FSDP2 (each decoder layer a unit) in ``full`` mode only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from baton.errors import ModelError, PlanError
from baton.ml.families.base import DATA_PARALLEL, Family
from baton.ml.llm.args import ARGS, FAMILY, lm_args
from baton.ml.llm.model import HFCausalLM
from baton.ml.plans import PlanKind


class HFCausalLMFamily(Family):
    """``hf_causal_lm``: the arguments of :class:`baton.ml.llm.args.LMArgs`; a sequence model."""

    name: ClassVar[str] = FAMILY
    args: ClassVar[tuple[str, ...]] = ARGS
    model_type: ClassVar[type[nn.Module]] = HFCausalLM
    plans: ClassVar[frozenset[PlanKind]] = DATA_PARALLEL
    sequence: ClassVar[bool] = True

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Checks ``args``, then refuses: the model needs a site's base checkpoint.

        Raises:
            ModelError: Always (naming a bad argument first).
        """
        lm_args(args)
        raise ModelError(
            f"model {FAMILY!r} is built from a site's base checkpoint by task "
            "'causal_lm_finetune' only"
        )

    def build_on(self, args: Mapping[str, Any], checkpoint: Path, *, seed: int) -> nn.Module:
        """The model ``args`` describe on the checkpoint directory a site already checked
        against the plan's pin (its hash is not computed again).

        Raises:
            ModelError: The arguments are invalid, or the checkpoint does not load.
        """
        from baton.ml.llm.task import build_lm

        return build_lm(args, checkpoint, seed=seed, verify=False)

    def check_plan(self, model: nn.Module, kind: PlanKind) -> None:
        """Refuses a plan that cannot train ``model`` in its mode.

        Raises:
            PlanError: FSDP on adapters (``lora``): they are too small to shard, and the
                frozen base would be sharded with them.
        """
        mode = self.own(model).mode
        if kind == PlanKind.FSDP and mode != "full":
            raise PlanError(f"plan fsdp trains model {FAMILY!r} in mode 'full' only, not {mode!r}")

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """The decoder layers (the first ``ModuleList`` of the model), each its own unit."""
        for module in self.own(model).get_submodule("lm").modules():
            if isinstance(module, nn.ModuleList) and len(module) > 0:
                return list(module)
        return []
