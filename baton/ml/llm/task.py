"""The task ``causal_lm_finetune``: fine-tune a pretrained causal LM on each site's text.

Every site holds the same pretrained base checkpoint and its own documents (the layout is
in :mod:`baton.ml.llm.data`). The plan names the model ``hf_causal_lm`` with arguments
(:mod:`baton.ml.llm.args`)::

    [model]
    name = "hf_causal_lm"
    args = { base_sha256 = "sha256:...", mode = "lora", rank = 8, alpha = 16,
             dropout = 0.0, target_modules = ["q_proj", "v_proj"], base_dtype = "float32" }

``base_sha256`` pins the base (:func:`baton.ml.llm.base.base_hash`; the coordinator never
ships it): a site whose copy hashes otherwise refuses the hop naming both hashes, before
loading anything. With ``lora`` only the adapters train and travel; the result file holds
them with the plan's arguments (the pin included) in its metadata, and ``baton merge``
folds them into a full checkpoint. With ``full`` every weight trains and travels.

Metrics: ``loss`` and ``perplexity`` (primary, lower is better) over every position of the
validation windows, ``tokens_per_s``, ``num_examples``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.llm.args import FAMILY, lm_args
from baton.ml.llm.base import check_base, load_base
from baton.ml.llm.data import TASK, base_dir, read_lm_site
from baton.ml.llm.model import adapt, load_trainable, trainable_state
from baton.ml.llm.train import evaluate_lm, lm_training
from baton.ml.task import Metric

if TYPE_CHECKING:
    from baton.ml.data import Schema, SiteData
    from baton.plan import RunPlan

__all__ = ["CAUSAL_LM_FINETUNE", "PERPLEXITY", "CausalLMFinetune", "build_lm"]

PERPLEXITY = Metric(name="perplexity", higher_is_better=False)
"""The primary metric: ``exp`` of the mean next-token cross-entropy, lower is better."""
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_lm(
    plan_args: Mapping[str, object], base: Path, *, seed: int, verify: bool = True
) -> nn.Module:
    """The model ``plan_args`` describe on the base checkpoint ``base``: its hash checked
    against the pin first (unless ``verify`` is False: a site's parallel workers load the
    checkpoint the site checked for the same hop), then loaded and made trainable
    (adapters drawn from ``seed``).

    Raises:
        ModelError: The arguments are invalid, or the checkpoint does not load.
        DataError: The checkpoint's hash is not the pinned one (both named), or it is
            missing or unreadable.
    """
    args = lm_args(plan_args)
    if verify:
        check_base(base, args.base_sha256, where="this site's")
    model, _ = load_base(base, dtype=_DTYPES[args.base_dtype])
    adapted = adapt(model, args, seed=seed)
    adapted.checkpoint = str(base)
    return adapted


@dataclass(frozen=True, kw_only=True, slots=True)
class CausalLMFinetune:
    """A task object with every hook of :class:`baton.ml.hooks.ModelHooks`."""

    name: str = TASK
    primary_metric: Metric = PERPLEXITY

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        """Tokenizes the site's text with its base's tokenizer (:mod:`baton.ml.llm.data`)."""
        return read_lm_site(site_dir)

    def build_model(self, plan: RunPlan, schema: Schema, site_dir: Path | None) -> nn.Module:
        """The plan's ``hf_causal_lm`` on the site's base, checked against the plan's pin.

        Raises:
            ModelError: The plan names another model, or no site directory is given.
            DataError: The site's base differs from the pinned one.
        """
        if plan.model.name != FAMILY:
            raise ModelError(f"task {TASK!r} trains model {FAMILY!r}, not {plan.model.name!r}")
        if site_dir is None:
            raise ModelError(f"task {TASK!r} needs a site directory holding the base checkpoint")
        model = build_lm(plan.model.args, base_dir(site_dir), seed=plan.run.seed)
        vocab = getattr(model, "vocab", None)
        if vocab != schema.num_classes:
            raise ModelError(
                f"the base outputs {vocab} token ids, the site's schema has {schema.num_classes}"
            )
        return model

    training_policy = staticmethod(lm_training)
    """Baton's loop without logit adjustment (:func:`baton.ml.llm.train.lm_training`), so
    the site's parallel plans train the model too."""
    evaluate = staticmethod(evaluate_lm)
    """Loss, perplexity, tokens/s: :func:`baton.ml.llm.train.evaluate_lm`."""
    travelling_state = staticmethod(trainable_state)
    """The adapters (``lora``) or every weight (``full``)."""
    load_travelling = staticmethod(load_trainable)
    """Strict loading of what travels: :func:`baton.ml.llm.model.load_trainable`."""


CAUSAL_LM_FINETUNE = CausalLMFinetune()
"""The task object the ``baton.tasks`` entry point names."""
