"""The test-only kill hook: off by default, dies right after the chosen durable write."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from baton import exit_codes
from coordinator.store.kill_hook import COUNT_FILE, ENV

WRITE_THREE = (
    "from coordinator.store.kill_hook import after_commit, durable_write\n"
    "after_commit(False)\n"  # a read-only transaction is no write
    "for kind in ('sqlite commit', 'audit append', 'blob finish'):\n"
    "    durable_write(kind)\n"
    "print('survived')\n"
)


def _run(value: str | None, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "", "BATON_LOG_LEVEL": "INFO"}
    if value is not None:
        env[ENV] = value
    bind = "" if state_dir is None else f"kill_hook.bind(pathlib.Path({str(state_dir)!r}))\n"
    prelude = "import logging, pathlib; logging.basicConfig(level='INFO')\n"
    prelude += "from coordinator.store import kill_hook\n" + bind
    return subprocess.run(
        [sys.executable, "-c", prelude + WRITE_THREE],
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


def test_lives_on_one_state_directory_count_its_writes_together(tmp_path: Path) -> None:
    """Write numbers go on across processes: the second life dies at the run's 5th write,
    its own 2nd, and the count file says 5."""
    first = _run("0", tmp_path)
    assert (first.returncode, first.stdout) == (0, "survived\n")
    assert (tmp_path / COUNT_FILE).read_text() == f"{3:020d}\n"
    second = _run("5", tmp_path)
    assert second.returncode == -signal.SIGKILL
    assert "3 durable write(s) of" in second.stderr
    assert "SIGKILL after durable write 5 (audit append)" in second.stderr
    assert (tmp_path / COUNT_FILE).read_text() == f"{5:020d}\n"


def test_a_passed_write_number_never_kills(tmp_path: Path) -> None:
    (tmp_path / COUNT_FILE).write_text(f"{7:020d}\n")
    done = _run("5", tmp_path)
    assert (done.returncode, done.stdout) == (0, "survived\n")
    assert (tmp_path / COUNT_FILE).read_text() == f"{10:020d}\n"


def test_unarmed_bind_leaves_no_file(tmp_path: Path) -> None:
    done = _run(None, tmp_path)
    assert (done.returncode, done.stdout) == (0, "survived\n")
    assert not (tmp_path / COUNT_FILE).exists()
