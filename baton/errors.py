"""Baton's exception tree: every error the project raises on purpose, in one place.

    BatonError             FAILED_PRECONDITION  a deliberate error with one clear line
    ├── ConfigError        INVALID_ARGUMENT     a plan or config file is missing, malformed
    │                                           or inconsistent
    ├── PkiError           PERMISSION_DENIED*   a certificate or key is missing, unreadable
    │                                           or not acceptable
    ├── Denied             PERMISSION_DENIED    the authenticated caller may not do this
    ├── SealError          INVALID_ARGUMENT*    a sealed hop was rejected (``reason`` says why)
    ├── AuditError         FAILED_PRECONDITION  an audit log cannot be read, written or verified
    ├── TransportError     UNAVAILABLE          a peer is unreachable or did not answer in
    │   │                                       time: retrying may succeed
    │   └── ServerFault    UNAVAILABLE          a peer answered but could not serve the call
    │                                           (internal error, overloaded): retry a few times
    ├── Rejected           FAILED_PRECONDITION  a peer answered and refused the call for good
    │                                           (``status`` says how): retrying cannot help
    ├── DataError          FAILED_PRECONDITION  a site's local dataset is missing or invalid
    ├── ModelError         INVALID_ARGUMENT     unknown model, or weights that do not fit it
    ├── BlobError          INVALID_ARGUMENT     a blob transfer is out of order, truncated or
    │   │                                       corrupt
    │   └── BlobStoreFault INTERNAL*            the coordinator's own blob storage failed
    ├── StoreError         FAILED_PRECONDITION  the coordinator's state refused an operation
    │   ├── NotFoundError  NOT_FOUND            the run, hop or site does not exist
    │   └── ConflictError  FAILED_PRECONDITION  the operation contradicts the current state
    ├── ParallelError      FAILED_PRECONDITION  parallel training at a site failed
    │   ├── PlanError                           no parallel plan fits, or an override cannot run
    │   └── WorkerError                         a worker process failed
    └── ProcessExited      FAILED_PRECONDITION  a child process the caller depends on exited

    TrainingInterrupted    (not a BatonError: nothing failed) a stopping daemon ends a hop

Each class names the gRPC status it becomes at a server's edge (``grpc_status``, the name
of a ``grpc.StatusCode``) and what a remote party is told (``public``: ``None`` for the
error's own message, or a fixed word where the details must stay local, marked * above: a
remote party never learns why its identity or its sealed hop was rejected). Errors carry
typed context (``site_id``, ``run_id``, ``hop``) where it exists, so entry points print one
clear line and map the error to an exit code (:mod:`baton.exit_codes`).
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal, get_args

__all__ = [
    "REASONS",
    "AuditError",
    "BatonError",
    "BlobError",
    "BlobStoreFault",
    "ConfigError",
    "ConflictError",
    "DataError",
    "Denied",
    "ModelError",
    "NotFoundError",
    "ParallelError",
    "PkiError",
    "PlanError",
    "ProcessExited",
    "Reason",
    "Rejected",
    "SealError",
    "ServerFault",
    "StoreError",
    "TrainingInterrupted",
    "TransportError",
    "WorkerError",
]


class BatonError(Exception):
    """Root of every deliberate Baton error.

    Args:
        message: One human-readable line saying what is wrong and, where possible, what
            to do about it.
        site_id: The site concerned, if any.
        run_id: The run concerned, if any.
        hop: The hop index concerned, if any.
    """

    grpc_status: ClassVar[str] = "FAILED_PRECONDITION"
    """Name of the ``grpc.StatusCode`` this error becomes at a server's edge."""
    public: ClassVar[str | None] = None
    """What a remote party is told: ``None`` for :attr:`message`, else this fixed text."""

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

    @property
    def public_message(self) -> str:
        """The message a remote party may read."""
        return self.message if self.public is None else self.public


class ConfigError(BatonError):
    """A plan or configuration file is missing, malformed or inconsistent."""

    grpc_status = "INVALID_ARGUMENT"


class PkiError(BatonError):
    """A certificate or key is missing, unreadable, or not acceptable."""

    grpc_status = "PERMISSION_DENIED"
    public = "not authorized"


class Denied(BatonError):
    """The authenticated caller may not do this (e.g. act on another site's hop)."""

    grpc_status = "PERMISSION_DENIED"


Reason = Literal[
    "oversized",
    "malformed",
    "unsupported_version",
    "bad_signature",
    "wrong_recipient",
    "wrong_context",
    "broken_chain",
    "expired",
    "replay",
    "equivocation",
    "rollback",
    "unwrap_failed",
    "truncated",
    "chunk_hash",
    "chunk_auth",
    "length_mismatch",
    "ciphertext_hash",
    "io_error",
]
"""Why a hop was rejected (see :class:`SealError`)."""
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)


class SealError(BatonError):
    """A sealed hop could not be sealed, or was rejected when verified or opened.

    ``reason`` is one of :data:`REASONS`, in the order the receiver checks them:
    ``oversized`` (manifest, blob, declared plaintext or chunk size over a limit),
    ``malformed`` (not a canonical SignedManifest, or an unparsable or inconsistent
    HopManifest), ``unsupported_version``, ``bad_signature`` (not signed by the expected
    sender's key), ``wrong_recipient`` (no key wrapped to me), ``wrong_context`` (run,
    hop, sender, plan or schema not as expected), ``broken_chain`` (previous manifest
    hash), ``expired`` (past its expiry, or created in the future), ``replay``,
    ``equivocation``, ``rollback`` (see :mod:`baton.security.replay`), ``unwrap_failed`` (my
    wrapped key is for another key or does not decrypt), ``truncated`` (the blob ends
    early), ``chunk_hash`` (a chunk's SHA-256 differs from the manifest), ``chunk_auth``
    (a chunk with the signed hash fails AEAD: only a faulty or malicious sender),
    ``length_mismatch`` (bytes after the last chunk, or wrong total), ``ciphertext_hash``
    (the whole blob's SHA-256 differs), and ``io_error`` (a local file could not be read
    or written: not a fault of the sender).

    Args:
        reason: Why, from :data:`REASONS`.
        message: One line for the local log; never sent to a remote party.
        run_id: The run concerned, if known.
        hop: The hop index concerned, if known.
    """

    grpc_status = "INVALID_ARGUMENT"
    public = "rejected"

    def __init__(
        self, reason: Reason, message: str, *, run_id: str | None = None, hop: int | None = None
    ) -> None:
        super().__init__(f"{reason}: {message}", run_id=run_id, hop=hop)
        self.reason: Reason = reason


class AuditError(BatonError):
    """An audit log cannot be read or written, or is broken where it must not be."""


class TransportError(BatonError):
    """A peer could not be reached, or an RPC to it failed."""

    grpc_status = "UNAVAILABLE"


class ServerFault(TransportError):
    """A peer answered a call but could not serve it (an internal error, overloaded,
    aborted): retrying may succeed, but a caller retries one piece of work only a few
    times, since a fault that persists would otherwise repeat it forever.

    Args:
        message: One line saying which call failed and how.
        status: Name of the ``grpc.StatusCode`` the peer answered with.
    """

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class Rejected(BatonError):
    """A peer answered a call and refused it for good: the same call fails again however
    often it is repeated (a missing blob, a hop no longer the caller's, a malformed
    request). The caller gives up that piece of work once, with a reason, instead of
    retrying it; whether the refusal concerns the caller as a whole is :class:`Denied`.

    Args:
        message: One line saying which call was refused and why.
        status: Name of the ``grpc.StatusCode`` the peer answered with.
        run_id: The run concerned, if known.
        hop: The hop index concerned, if known.
    """

    def __init__(
        self, message: str, *, status: str, run_id: str | None = None, hop: int | None = None
    ) -> None:
        super().__init__(message, run_id=run_id, hop=hop)
        self.status = status


class DataError(BatonError):
    """A site's local dataset is missing or fails validation."""


class ModelError(BatonError):
    """An unknown model was named, or weights do not fit the model."""

    grpc_status = "INVALID_ARGUMENT"


class BlobError(BatonError):
    """A blob transfer is out of order, truncated, or does not match its hash."""

    grpc_status = "INVALID_ARGUMENT"


class BlobStoreFault(BlobError):
    """The coordinator's own blob storage failed (a file system error: permissions, a
    missing directory, an I/O error): not the caller's doing, and a retry may succeed once
    its operator fixes it. The caller learns nothing of the coordinator's paths."""

    grpc_status = "INTERNAL"
    public = "the coordinator's blob store failed; its log names the cause"


class StoreError(BatonError):
    """The coordinator's state store refused an operation."""


class NotFoundError(StoreError):
    """The run, hop or site does not exist."""

    grpc_status = "NOT_FOUND"


class ConflictError(StoreError):
    """The operation contradicts the current state (e.g. completing a finished hop)."""


class ParallelError(BatonError):
    """Parallel training at this site failed."""


class PlanError(ParallelError):
    """No parallel plan fits the devices, or a requested plan cannot run on them."""


class WorkerError(ParallelError):
    """A training worker failed; the message carries the failing rank's reason.

    Args:
        message: The failing rank's reason.
        retryable: The workers crashed (a worker was killed, or lost a peer) rather than
            refusing the job with a Baton error: starting them again may succeed.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProcessExited(BatonError):
    """A child process the caller depends on exited."""


class TrainingInterrupted(Exception):
    """The site is stopping: the hop's workers were stopped, and its job directory (with
    its checkpoints) stays for the hop's next delivery to resume from."""
