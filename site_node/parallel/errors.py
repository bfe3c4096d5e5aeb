"""Errors of parallel training at a site.

BatonError
└── ParallelError            parallel training at this site failed
    ├── PlanError            no parallel plan fits, or an override is not possible
    └── WorkerError          a worker process failed; carries the worker's reason
"""

from __future__ import annotations

from baton.errors import BatonError


class ParallelError(BatonError):
    """Parallel training at this site failed."""


class PlanError(ParallelError):
    """No parallel plan fits the devices, or a requested plan cannot run on them."""


class WorkerError(ParallelError):
    """A training worker failed; the message carries the failing rank's reason."""
