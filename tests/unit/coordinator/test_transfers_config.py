"""The coordinator's ``[transfers]`` table: cut-through on by default, bad values refused
with the key named."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from baton.errors import ConfigError
from coordinator.config import TransfersConfig, load_coordinator_config

if TYPE_CHECKING:
    from pathlib import Path

HEAD = 'state_dir = "s"\n[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "c.key"\n'


def test_cut_through_is_on_unless_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(HEAD)
    assert load_coordinator_config(path).transfers == TransfersConfig(
        cut_through=True, stall_seconds=30.0, max_follows_per_site=2
    )
    path.write_text(HEAD + "[transfers]\ncut_through = false\nstall_seconds = 5\n")
    got = load_coordinator_config(path).transfers
    assert (got.cut_through, got.stall_seconds) == (False, 5.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("stall_seconds = 0", "'transfers.stall_seconds' must be positive, not 0"),
        ("max_follows_per_site = 0", "'transfers.max_follows_per_site' must be at least 1"),
        ("cut_thru = true", "cut_thru"),
    ],
)
def test_bad_transfer_settings_are_refused_by_name(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(HEAD + f"[transfers]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        load_coordinator_config(path)
    assert message in err.value.message
