"""Baton's exception tree; every error the project raises on purpose is a BatonError.

    BatonError
    ├── ConfigError        a plan or config file is missing, malformed or inconsistent
    ├── PkiError           a certificate or key is missing, unreadable or not acceptable
    ├── TransportError     a peer is unreachable or an RPC failed
    ├── DataError          a site's local dataset is missing or fails validation
    ├── ModelError         unknown model, or weights that do not fit the model
    ├── BlobError          a blob transfer is out of order, truncated or corrupt
    └── StoreError         the coordinator's state store refused an operation
        ├── NotFoundError  the run, hop or site does not exist
        └── ConflictError  the operation contradicts the current state

Errors carry typed context (``site_id``, ``run_id``, ``hop``) where it exists, so the
entry points can print one clear line and map the error to an exit code.
"""

from __future__ import annotations


class BatonError(Exception):
    """Root of every deliberate Baton error.

    Args:
        message: One human-readable line saying what is wrong and, where possible, what
            to do about it.
        site_id: The site concerned, if any.
        run_id: The run concerned, if any.
        hop: The hop index concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        site_id: str | None = None,
        run_id: str | None = None,
        hop: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.site_id = site_id
        self.run_id = run_id
        self.hop = hop


class ConfigError(BatonError):
    """A plan or configuration file is missing, malformed or inconsistent."""


class PkiError(BatonError):
    """A certificate or key is missing, unreadable, or not acceptable."""


class TransportError(BatonError):
    """A peer could not be reached, or an RPC to it failed."""


class DataError(BatonError):
    """A site's local dataset is missing or fails validation."""


class ModelError(BatonError):
    """An unknown model was named, or weights do not fit the model."""


class BlobError(BatonError):
    """A blob transfer is out of order, truncated, or does not match its hash."""


class StoreError(BatonError):
    """The coordinator's state store refused an operation."""


class NotFoundError(StoreError):
    """The run, hop or site does not exist."""


class ConflictError(StoreError):
    """The operation contradicts the current state (e.g. completing a finished hop)."""
