"""The PKI's files on disk: read naming their role, written once and durably, in 0700
directories."""

from __future__ import annotations

from pathlib import Path

from baton.errors import PkiError
from baton.io import atomic_write


def make_dir(path: Path) -> None:
    """Creates ``path`` (mode 0700) if it is missing; an existing directory keeps its mode."""
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:
        raise PkiError(f"cannot create directory {path}: {exc.strerror}") from None


def read_file(path: Path, *, role: str) -> bytes:
    """Reads a file, naming its role (e.g. ``"CA certificate"``) if that fails."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {role} {path}: {exc.strerror}") from None


def write_new(path: Path, data: bytes, *, role: str, mode: int = 0o644) -> None:
    """Writes a file that MUST NOT exist yet, durably, with permissions ``mode``.

    Raises:
        PkiError: ``path`` exists (it is left as it is), or cannot be written.
    """
    try:
        atomic_write(path, data, mode=mode, exclusive=True)
    except FileExistsError:
        raise PkiError(f"{path} already exists; refusing to overwrite a {role}") from None
    except OSError as exc:
        raise PkiError(f"cannot write {role} {path}: {exc.strerror}") from None
