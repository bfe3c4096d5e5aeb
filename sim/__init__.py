"""Simulations for developers and researchers: the demo, a local federation of processes,
the in-process simulator, the ordering lab and its toy tasks. Production code never imports
it."""

__all__ = [
    "cli",
    "demo",
    "lab",
    "localfed",
    "procs",
    "simulate",
    "tasks",
]
