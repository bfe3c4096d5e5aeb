"""Fixtures of the site's hop tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.unit.site_node.hop_world import World, new_world

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import Pki


@pytest.fixture
def world(pki: Pki, tmp_path: Path) -> Iterator[World]:
    """Three sites and a study owner with real keys (see ``hop_world``)."""
    with new_world(pki, tmp_path) as w:
        yield w
