"""What every entry point shares: logging set-up, and errors as one line and an exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.errors import BatonError
from baton.security.tls13 import pin_tls13

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def configure_logging(default: str = "INFO", *, log_format: str = "text") -> None:
    """Sends log records to stderr at the level named by ``BATON_LOG_LEVEL``, as text lines
    or, with ``log_format="json"``, as JSON lines (see :mod:`baton.logs`).

    An unknown ``log_format`` exits with a one-line error and the usage exit code.
    """
    from baton.errors import ConfigError
    from baton.logs import JsonFormatter, check_log_format

    try:
        check_log_format(log_format)
    except ConfigError as exc:
        fail(exc.message, exit_codes.USAGE)
    level_name = os.environ.get("BATON_LOG_LEVEL", default).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    # gRPC and friends are chatty at DEBUG; keep them at WARNING unless asked.
    for noisy in ("grpc", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def fail(message: str, code: int) -> None:
    """Prints one error line (no traceback) and exits with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise SystemExit(code)


@contextmanager
def exit_on_error(codes: dict[type[BatonError], int], default: int) -> Iterator[None]:
    """Turns a BatonError into one line on stderr and the mapped exit code.

    ``codes`` is searched in order; the first class the error is an instance of wins.
    Ctrl-C exits with 130 after a short note.
    """
    try:
        yield
    except BatonError as exc:
        for cls, code in codes.items():
            if isinstance(exc, cls):
                fail(exc.message, code)
        fail(exc.message, default)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(exit_codes.INTERRUPTED) from None


def on_terminate(callback: Callable[[], None]) -> None:
    """Calls ``callback`` once on SIGTERM or SIGINT (main thread only)."""
    fired = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not fired.is_set():
            fired.set()
            callback()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def make_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer app with Baton's defaults: no shell-completion commands, and tracebacks of
    unexpected errors without local variables (they could hold key material); gRPC, once
    loaded, speaks TLS 1.3 only."""
    kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
    pin_tls13()  # every command dials or serves gRPC, which loads later
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        **kwargs,
    )


def version_option(prog: str) -> Any:
    """An eager ``--version`` option for a root callback: prints ``PROG VERSION``, exits 0.

    Use as ``version: Annotated[bool, version_option("baton")] = False``.
    """

    def show(value: bool) -> None:
        if value:
            from importlib.metadata import version

            typer.echo(f"{prog} {version('baton-fl')}")
            raise typer.Exit()

    return typer.Option(
        "--version", is_eager=True, callback=show, help="Print the version and exit."
    )
