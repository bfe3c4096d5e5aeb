"""Fixtures of the integration tests: two registered sites beside a live coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveCoordinator
from tests.integration.sites import Sites


@pytest.fixture
def sites(coordinator: LiveCoordinator, tmp_path: Path) -> Iterator[Sites]:
    both = Sites(coordinator, tmp_path)
    yield both
    for log in both.logs.values():
        log.close()
