"""Child processes that are always cleaned up: the demo's coordinator and site daemons."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from baton.errors import ProcessExited

logger = logging.getLogger(__name__)


class ManagedProcess:
    """A Python module run as a child process with its output in a log file.

    Args:
        name: Label for messages.
        module: Module to run with ``python -m``.
        args: Its arguments.
        log_path: Where stdout and stderr go.
        env: Extra environment variables.
    """

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            # Ctrl-C in the terminal reaches only the parent, which then stops us.
            start_new_session=True,
        )

    def check_alive(self) -> None:
        """Raises ProcessExited, with the tail of the log, if the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise ProcessExited(
                f"{self.name} exited with code {code}; last log lines:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ProcessGroup:
    """Processes stopped together, in reverse start order, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        """Starts a ManagedProcess that belongs to the group."""
        proc = ManagedProcess(name, module, args, log_path=log_path, env=env)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    def stop_all(self) -> None:
        # SIGTERM everyone first, so they shut down in parallel.
        for proc in reversed(self.procs):
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in reversed(self.procs):
            proc.stop(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_for_file(path: Path, *, timeout: float, group: ProcessGroup) -> str:
    """Waits for a file to appear (e.g. a port file), failing early if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        group.check_alive()
        time.sleep(0.05)
    raise ProcessExited(f"timed out after {timeout:.0f}s waiting for {path.name}")
