"""Parallel training inside one site: plan choice, worker processes and their launcher."""

__all__ = [
    "checkpoint",
    "families",
    "job",
    "launch",
    "nodes",
    "pipeline",
    "plans",
    "worker",
]
