"""Baton: sequential learning across sites that cannot share their data."""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "config",
    "domain",
    "entry",
    "errors",
    "exit_codes",
    "io",
    "ml",
    "plan",
    "security",
    "v1",
    "wire",
]
