"""The study owner's and the CA operator's tools: the ``baton`` command, the AdminService
client, and fetching a run's final model."""

__all__ = [
    "cli",
    "cli_pki",
    "cli_runs",
    "cli_verify",
    "client",
    "config",
    "fetch",
]
