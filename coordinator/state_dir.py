"""The coordinator's state directory: checked usable before anything starts, and held by
one coordinator at a time (an exclusive lock on ``coordinator.lock``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from baton.errors import ConfigError, StoreError

LOCK_NAME = "coordinator.lock"


class StateDirLock:
    """Claims ``path`` for this process: creates it (0700) if missing, checks that it is a
    writable directory, and takes an exclusive lock that lasts until :meth:`release` (or
    the process ends: the kernel drops the lock of a killed process).

    Raises:
        ConfigError: ``path`` exists and is not a directory.
        StoreError: it cannot be created or written, or another coordinator holds it.
    """

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"state_dir {path} is a file, not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {path}: {exc.strerror}") from None
        self.path = path
        lock = path / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(
                f"the state directory {path} is not writable: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(
                f"another coordinator is using the state directory {path} (it holds {lock}); "
                "stop it first, or give this one its own state_dir"
            ) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        except OSError as exc:
            self.release()
            raise StoreError(
                f"the state directory {path} is not writable: {exc.strerror}"
            ) from None

    def release(self) -> None:
        """Drops the lock; idempotent."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _not_writable(path: Path, exc: OSError) -> str:
    return f"the state directory {path} is not writable: {exc.strerror}"
