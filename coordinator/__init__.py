"""The coordinator: scheduler and blind relay of model blobs."""

__all__ = [
    "api",
    "blobs",
    "cli",
    "config",
    "engine",
    "server",
    "store",
    "tls_reload",
]
