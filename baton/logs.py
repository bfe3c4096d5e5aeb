"""Log records as text lines or as JSON lines (one object per record) for log collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from baton.errors import ConfigError

LOG_FORMATS = ("text", "json")
"""The formats ``--log-format`` (or ``BATON_LOG_FORMAT``) accepts."""

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
"""A LogRecord's own attributes; any other attribute came from ``extra=`` and is logged too."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the record's ``extra`` fields, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        when = datetime.fromtimestamp(record.created, tz=UTC)
        data: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def check_log_format(value: str) -> str:
    """``value`` if it names a log format.

    Raises:
        ConfigError: it names none.
    """
    if value not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return value


LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="BATON_LOG_FORMAT",
        help="How log records are written to stderr: 'text' lines or 'json' (one object "
        "per line: time, level, logger, message and extra fields).",
    ),
]
"""The ``--log-format`` option of the long-running commands."""
