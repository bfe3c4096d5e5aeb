"""A second coordinator on a port in use refuses to start, instead of sharing the port."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.errors import TransportError
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from tests.conftest import LiveCoordinator, Pki


def test_a_second_coordinator_on_the_same_port_is_refused(
    coordinator: LiveCoordinator, pki: Pki, tmp_path: Path
) -> None:
    files = pki.files("coordinator")
    config = CoordinatorConfig(
        tls=files, listen=coordinator.target, state_dir=tmp_path / "other-state"
    )
    with pytest.raises(TransportError) as err:
        CoordinatorServer(config, files.load())
    assert err.value.message.startswith(f"cannot listen on {coordinator.target}")
    # The first one still serves, alone.
    assert coordinator.server.port == int(coordinator.target.rsplit(":", 1)[1])
