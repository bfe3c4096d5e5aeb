"""``--log-format json``: one JSON object per log record, with the record's extra fields."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from baton import exit_codes

SCRIPT = """
import logging, sys
from baton.entry import configure_logging
configure_logging(log_format=sys.argv[1])
log = logging.getLogger("coordinator.engine")
log.info("hop %d of run %s done", 3, "r1", extra={"run_id": "r1", "hop": 3})
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_json_log_lines_carry_time_level_logger_message_and_extras() -> None:
    done = _run("-c", SCRIPT, "json")
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert first.pop("time").endswith("Z")
    assert first == {
        "level": "INFO",
        "logger": "coordinator.engine",
        "message": "hop 3 of run r1 done",
        "run_id": "r1",
        "hop": 3,
    }
    assert second["level"] == "ERROR"
    assert second["exception"].endswith("ValueError: boom")


def test_text_stays_the_default() -> None:
    done = _run("-c", SCRIPT, "text")
    assert " INFO    coordinator.engine: hop 3 of run r1 done" in done.stderr.splitlines()[0]


def test_unknown_log_format_is_a_usage_error_on_the_real_commands() -> None:
    from coordinator.cli import app as coordinator_app
    from site_node.cli import app as site_app

    done = CliRunner().invoke(
        coordinator_app, ["serve", "--config", "absent.toml", "--log-format", "xml"]
    )
    assert done.exit_code == exit_codes.USAGE, done.output
    assert "log format must be one of text, json, not 'xml'" in done.output
    # The site's run command checks it the same way (before it loads torch to start).
    assert "--log-format" in CliRunner().invoke(site_app, ["run", "--help"]).output
