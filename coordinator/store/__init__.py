"""Coordinator state stores."""

# sqlite_open and sqlite_rows are the SQLite store's internals.
__all__ = [
    "base",
    "memory",
    "sqlite",
]
