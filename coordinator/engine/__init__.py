"""The coordinator's engine: the run and hop state machine, cycle planning with ``ordering``,
evaluations and assignments. It speaks domain types, never protobuf."""

__all__ = [
    "assignments",
    "evaluations",
    "journal",
    "planning",
    "runs",
    "schemas",
    "sites",
    "transfers",
]
