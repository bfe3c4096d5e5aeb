"""Errors of parallel training at a site.

BatonError
└── ParallelError            parallel training at this site failed
    ├── PlanError            no parallel plan fits, or an override is not possible
    └── WorkerError          a worker process failed; carries the worker's reason

TrainingInterrupted (not a BatonError: nothing failed) stops a hop whose daemon is stopping.
"""

from __future__ import annotations

from baton.errors import BatonError


class ParallelError(BatonError):
    """Parallel training at this site failed."""


class PlanError(ParallelError):
    """No parallel plan fits the devices, or a requested plan cannot run on them."""


class WorkerError(ParallelError):
    """A training worker failed; the message carries the failing rank's reason.

    Args:
        message: The failing rank's reason.
        retryable: The workers crashed (a worker was killed, or lost a peer) rather than
            refusing the job with a Baton error: starting them again may succeed.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TrainingInterrupted(Exception):
    """The site is stopping: the hop's workers were stopped, and its job directory (with
    its checkpoints) stays for the hop's next delivery to resume from."""
