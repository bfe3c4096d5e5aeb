"""Everything in the kernel that touches torch: the safetensors codec, a site's data on disk,
the model families and the one training loop that the site, its workers and the simulations
share."""

__all__ = [
    "codec",
    "data",
    "families",
    "models",
    "models_lm",
    "norm",
    "plans",
    "step",
    "tasks",
    "trainer",
]
