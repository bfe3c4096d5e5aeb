"""The three binaries answer ``--version`` and ``-h`` as users expect."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

BINARIES = {"baton": "owner.cli", "coordinator": "coordinator.cli", "site-node": "site_node.cli"}


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("prog", "module"), BINARIES.items())
def test_version_prints_name_and_package_version(prog: str, module: str) -> None:
    proc = _run(module, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{prog} {version('baton-fl')}"


@pytest.mark.parametrize("module", BINARIES.values())
def test_short_help_is_help(module: str) -> None:
    short, long = _run(module, "-h"), _run(module, "--help")
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert "--version" in short.stdout


def test_subcommands_take_short_help_too() -> None:
    proc = _run("owner.cli", "runs", "-h")
    assert proc.returncode == 0, proc.stderr
    assert "--json" in proc.stdout
