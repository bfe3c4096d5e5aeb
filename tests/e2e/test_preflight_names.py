"""Preflight against a live coordinator says why it cannot be reached, and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton import exit_codes
from sim.procs import ProcessGroup
from tests.e2e.test_provision_kits import cli, free_port, make_kits, start_coordinator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_preflight_names_the_host_mismatch_and_a_foreign_ca(tmp_path: Path) -> None:
    port = free_port()
    kits = make_kits(tmp_path / "a", '["coord.example.org"]', port, ["hospital-1"])
    other = make_kits(tmp_path / "b", '["127.0.0.1"]', port, ["hospital-9"])
    site_dir = kits / "sites" / "hospital-1"
    config = site_dir / "site.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(f"coord.example.org:{port}", f"127.0.0.1:{port}"))
    with ProcessGroup() as group:
        start_coordinator(group, kits, port)
        check = cli("site_node.cli", "check", "--config", str(config))
        assert check.returncode == 205
        assert (
            "FAIL  coordinator: TLS refused: name mismatch (cert names coord.example.org, "
            f'you dialled 127.0.0.1); dial "coord.example.org:{port}"'
        ) in check.stdout
        assert "ok    data:" in check.stdout
        assert check.stdout.splitlines()[-1] == "NOT READY: 1 check(s) failed, 0 warning(s)"

        # The same coordinator, dialled by the name its certificate holds: the site's
        # server_name says which name to expect, and the handshake goes through.
        config.write_text(
            config.read_text(encoding="utf-8").replace(
                "heartbeat_seconds", 'server_name = "coord.example.org"\nheartbeat_seconds'
            )
        )
        named = cli("site_node.cli", "check", "--config", str(config))
        assert named.returncode == 0, named.stdout

        foreign = cli("owner.cli", "check", "--admin", str(other / "owner" / "admin.toml"))
        assert foreign.returncode == 69
        assert "FAIL  coordinator: TLS refused: unknown CA (the coordinator's certificate" in (
            foreign.stdout
        )
        # The everyday commands name the problem too, in their "unreachable" error.
        listing = cli("owner.cli", "sites", "--admin", str(other / "owner" / "admin.toml"))
        assert listing.returncode == exit_codes.CLI_UNREACHABLE
        assert f"coordinator at 127.0.0.1:{port} unreachable (TLS refused: unknown CA" in (
            listing.stderr
        )
