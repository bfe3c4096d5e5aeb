"""The admin config: where the coordinator is and which certificate the study owner shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baton.config import load
from baton.security.tls import TlsFiles


@dataclass(frozen=True, kw_only=True, slots=True)
class AdminConfig:
    """Where the coordinator is and which admin certificate to present."""

    coordinator: str
    """Coordinator address, ``host:port``."""
    tls: TlsFiles
    """The admin's certificate, key and the federation CA."""
    keys_dir: Path = Path("keys")
    """The study owner's signing and encryption keys with their certificates: plans are
    signed with the first, final models are sealed to the second."""
    server_name: str = ""
    """Name expected in the coordinator's certificate when it differs from the host dialled."""


def load_admin_config(path: Path) -> AdminConfig:
    """Reads an admin config; relative paths in it are taken from the file's directory.

    Raises:
        ConfigError: The file is missing, not TOML, or its keys or values are invalid.
    """
    return load(AdminConfig, path)
