"""The ``hf_causal_lm`` family: a pretrained Hugging Face causal LM that sites fine-tune.

Its models are built by the task ``causal_lm_finetune`` from the base checkpoint each site
holds (:mod:`baton.ml.llm`), never from the plan alone: :meth:`HFCausalLMFamily.build`
checks the arguments and refuses. Trained in one process at each site (the task trains
itself), hence the single plan only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from baton.errors import ModelError
from baton.ml.families.base import Family
from baton.ml.llm.args import ARGS, FAMILY, lm_args
from baton.ml.llm.model import HFCausalLM
from baton.ml.plans import PlanKind


class HFCausalLMFamily(Family):
    """``hf_causal_lm``: the arguments of :class:`baton.ml.llm.args.LMArgs`; a sequence model."""

    name: ClassVar[str] = FAMILY
    args: ClassVar[tuple[str, ...]] = ARGS
    model_type: ClassVar[type[nn.Module]] = HFCausalLM
    plans: ClassVar[frozenset[PlanKind]] = frozenset({PlanKind.SINGLE})
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
