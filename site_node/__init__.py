"""The site-node daemon: a hospital's end of Baton; dials out only."""

# handover, receive, transfer, local_training, outbox, progress and retry are the hop's internals.
__all__ = [
    "cli",
    "client",
    "config",
    "daemon",
    "fake_client",
    "hop",
    "parallel",
]
