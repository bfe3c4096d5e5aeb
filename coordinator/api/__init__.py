"""The coordinator's gRPC edge: thin servicers that authenticate, convert and delegate to
the engine."""

__all__ = [
    "admin",
    "auth",
    "errors",
    "serde",
    "site",
]
