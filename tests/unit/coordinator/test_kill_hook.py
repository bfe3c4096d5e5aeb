"""The test-only kill hook: off by default, dies right after the chosen durable write."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from baton import exit_codes
from coordinator.store.kill_hook import ENV

WRITE_THREE = (
    "from coordinator.store.kill_hook import after_commit, durable_write\n"
    "after_commit(False)\n"  # a read-only transaction is no write
    "for kind in ('sqlite commit', 'audit append', 'blob finish'):\n"
    "    durable_write(kind)\n"
    "print('survived')\n"
)


def _run(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "", "BATON_LOG_LEVEL": "INFO"}
    if value is not None:
        env[ENV] = value
    return subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig()\n" + WRITE_THREE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("value", [None, "", "0"])
def test_unset_or_zero_never_kills(value: str | None) -> None:
    done = _run(value)
    assert (done.returncode, done.stdout) == (0, "survived\n")
    assert ("TEST HOOK ARMED" in done.stderr) == (value == "0")


def test_kills_right_after_the_chosen_write() -> None:
    done = _run("2")
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == ""
    assert "SIGKILL after durable write 2 (audit append)" in done.stderr
    assert "blob finish" not in done.stderr


def test_a_bad_value_stops_with_a_clear_message() -> None:
    done = _run("five")
    assert done.returncode == exit_codes.COORDINATOR_CONFIG
    assert f"{ENV}='five' is not a write number" in done.stderr
