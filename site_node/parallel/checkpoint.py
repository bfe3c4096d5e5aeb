"""The workers' within-hop checkpoints: the kernel's format (:mod:`baton.ml.checkpoint`),
one safetensors shard and JSON index per rank, nothing pickled.

The in-process trainer (:func:`baton.ml.trainer.train_local`) writes the same format as
rank 0 of 1; this module names it for the workers and their launcher.
"""

from __future__ import annotations

from baton.ml.checkpoint import LATEST, MAX_INDEX_BYTES, latest, load, save

__all__ = ["LATEST", "MAX_INDEX_BYTES", "latest", "load", "save"]
