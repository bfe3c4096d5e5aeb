"""What parallel training asks a job's model family: the model of a job, and its footprint.

Everything family-specific (tensor-parallel plans, pipeline stages, FSDP units, activation
estimates) lives with the family in :mod:`baton.ml.families`; this module only adapts a
job's :class:`~site_node.parallel.job.ModelSpec` and the plan choice to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from baton.errors import ModelError
from baton.ml.families import family, family_of
from baton.ml.families.hf_causal_lm import HFCausalLMFamily
from baton.ml.models import build_model
from baton.ml.plans import ModelFootprint

if TYPE_CHECKING:
    from site_node.parallel.job import ModelSpec


def build(spec: ModelSpec, *, seed: int = 0) -> nn.Module:
    """Builds the model of ``spec`` (its weights are replaced by the job's weights later),
    on the site's checkpoint where the spec names one.

    Raises:
        ModelError: Unknown model or arguments, or a model that builds on no checkpoint.
    """
    if spec.checkpoint:
        fam = family(spec.name)
        if not isinstance(fam, HFCausalLMFamily):
            raise ModelError(f"model {spec.name!r} does not build on a checkpoint")
        return fam.build_on(spec.args, Path(spec.checkpoint), seed=seed)
    return build_model(
        spec.name,
        spec.args,
        num_features=spec.num_features,
        num_classes=spec.num_classes,
        seed=seed,
    )


def footprint(
    model: nn.Module, *, optimizer: str, batch: int, example_shape: tuple[int, ...]
) -> ModelFootprint:
    """A rough estimate of what training ``model`` on global batches of ``batch`` needs."""
    fam = family_of(model)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    units = fam.shard_units(model)
    unit_params = max((sum(p.numel() for p in u.parameters()) for u in units), default=0)
    return ModelFootprint(
        num_params=num_params,
        global_batch=batch,
        unit_bytes=4 * unit_params,
        optimizer=optimizer,
        activation_bytes=fam.activation_bytes(model, batch=batch, example_shape=example_shape),
        tp_degrees=fam.tp_degrees(model),
        pp_degrees=fam.pp_degrees(model),
    )
