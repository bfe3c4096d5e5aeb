"""Storage faults at the coordinator: a full disk under the audit log, a partial last
line, a state directory that is a file, read-only or already in use."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton.errors import AuditError, ConfigError, StoreError
from baton.security.audit import AuditLog, verify_log
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from coordinator.state_dir import StateDirLock
from coordinator.store.sqlite import SqliteStore
from tests.conftest import Pki

PARTY = "spiffe://test.example/site/site-a"


@pytest.fixture
def log(pki: Pki, tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(
        tmp_path / "a.jsonl", party=PARTY, signing_key=pki.keys("site-a").signing_key
    ) as a:
        a.append("site_registered", detail={"site": "a"})
        yield a


@pytest.mark.parametrize("fault", ["enospc", "short"])
def test_a_failed_audit_write_leaves_the_log_whole_and_open(
    log: AuditLog, pki: Pki, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    before = log.path.read_bytes()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if fault == "short":  # the disk had room for half the line
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_disk)
        with pytest.raises(AuditError, match="cannot append to audit log"):
            log.append("run_created", run_id="r1")
    assert log.path.read_bytes() == before  # nothing partial left behind
    log.append("run_created", run_id="r1")  # space came back: the same log goes on
    report = verify_log(log.path, public_key=pki.keys("site-a").signing_key.public_key())
    assert (report.ok, report.entries) == (True, 2)


def test_a_partial_last_line_is_cut_back_with_a_warning_on_open(
    log: AuditLog, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    log.close()
    whole = log.path.read_bytes()
    with log.path.open("ab") as f:
        f.write(b'{"detail":{},"event":"run_crea')  # a write a crash cut short
    key = pki.keys("site-a").signing_key
    with caplog.at_level(logging.WARNING), AuditLog(log.path, party=PARTY, signing_key=key) as a:
        assert log.path.read_bytes() == whole
        assert a.append("run_created").seq == 2
    assert "ended in a partial line of 30 bytes" in caplog.text


def test_a_broken_line_before_the_last_is_still_refused(log: AuditLog, pki: Pki) -> None:
    log.append("run_created")
    log.close()
    lines = log.path.read_bytes().split(b"\n")
    log.path.write_bytes(lines[0][:20] + b"\n" + lines[1] + b"\n")
    with pytest.raises(AuditError, match="refusing to append"):
        AuditLog(log.path, party=PARTY, signing_key=pki.keys("site-a").signing_key)


def config(pki: Pki, state_dir: Path) -> CoordinatorConfig:
    return CoordinatorConfig(
        tls=pki.files("coordinator"), listen="127.0.0.1:0", state_dir=state_dir
    )


def test_state_dir_naming_a_file_is_a_clear_config_error(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(ConfigError) as err:
        CoordinatorServer(config(pki, tmp_path / "state"), pki.material("coordinator"))
    assert err.value.message == f"state_dir {tmp_path / 'state'} is a file, not a directory"


def test_a_second_coordinator_on_the_same_state_dir_refuses_to_start(
    pki: Pki, tmp_path: Path
) -> None:
    first = CoordinatorServer(config(pki, tmp_path / "state"), pki.material("coordinator"))
    try:
        with pytest.raises(StoreError, match="another coordinator is using the state directory"):
            CoordinatorServer(config(pki, tmp_path / "state"), pki.material("coordinator"))
    finally:
        first.stop(grace=0)
    # Released on stop: the next one starts.
    CoordinatorServer(config(pki, tmp_path / "state"), pki.material("coordinator")).stop(grace=0)


def test_the_state_dir_lock_outlives_nothing_but_its_holder(tmp_path: Path) -> None:
    lock = StateDirLock(tmp_path / "s")
    with pytest.raises(StoreError, match="another coordinator"):
        StateDirLock(tmp_path / "s")
    lock.release()
    StateDirLock(tmp_path / "s").release()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory holding a state database, then made read-only (a read-only bind mount
    where this process is root and chmod cannot stop it)."""
    path = tmp_path / "ro"
    path.mkdir()
    SqliteStore(path / "coordinator.db").close()
    if os.geteuid() != 0:
        os.chmod(path / "coordinator.db", 0o400)
        os.chmod(path, 0o500)
        yield path
        os.chmod(path, 0o700)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", path, path], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)


def test_a_read_only_database_refuses_to_open(read_only: Path) -> None:
    with pytest.raises(StoreError, match="read-only"):
        SqliteStore(read_only / "coordinator.db")


def test_a_read_only_state_dir_refuses_to_start(pki: Pki, read_only: Path) -> None:
    with pytest.raises(StoreError, match="not writable"):
        CoordinatorServer(config(pki, read_only), pki.material("coordinator"))
