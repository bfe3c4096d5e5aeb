"""The ``coordinator`` command: run the coordinator server."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

import typer

from baton import exit_codes
from baton.entry import (
    configure_logging,
    exit_on_error,
    make_app,
    on_terminate,
    version_option,
)
from baton.errors import ConfigError, PkiError, StoreError, TransportError
from baton.logs import LogFormatOpt

# ``serve`` imports the server (gRPC, the store, the engine) when it runs, so that
# ``coordinator --help`` stays fast.

logger = logging.getLogger("coordinator")

app = make_app("Baton coordinator: schedules hops and relays model blobs.")

_CODES = {
    ConfigError: exit_codes.COORDINATOR_CONFIG,
    PkiError: exit_codes.COORDINATOR_PKI,
    StoreError: exit_codes.COORDINATOR_STORE,
    TransportError: exit_codes.COORDINATOR_BIND,
}


@app.callback()
def _root(
    version: Annotated[bool, version_option("coordinator")] = False,
) -> None:
    """Baton coordinator."""


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Coordinator config file (TOML).")],
    port_file: Annotated[
        Path | None,
        typer.Option(help="Write the bound port here once serving (for listen port 0)."),
    ] = None,
    accept_state_loss: Annotated[
        bool,
        typer.Option(
            help="Start even if the state database lacks changes the audit log records "
            "(a lost WAL); what is lost is logged."
        ),
    ] = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Serve sites and admins over mTLS until SIGTERM or Ctrl-C."""
    from coordinator.config import load_coordinator_config
    from coordinator.server import CoordinatorServer, write_port_file

    configure_logging(log_format=log_format)
    with exit_on_error(_CODES, exit_codes.COORDINATOR_CONFIG):
        cfg = load_coordinator_config(config)
        tls = cfg.tls.load()
        server = CoordinatorServer(cfg, tls, accept_state_loss=accept_state_loss)
        stopping = threading.Event()
        on_terminate(stopping.set)
        server.start()
        if port_file is not None:
            write_port_file(port_file, server.port)
        while not stopping.wait(1.0):
            pass
        logger.info("shutting down")
        server.stop()


@app.command()
def gc(
    config: Annotated[Path, typer.Option("--config", "-c", help="Coordinator config file (TOML).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be removed.")
    ] = False,
) -> None:
    """Apply the blob store's retention policy once and say what it removed."""
    from coordinator.config import load_coordinator_config
    from coordinator.retention import collect_once

    configure_logging()
    with exit_on_error(_CODES, exit_codes.COORDINATOR_CONFIG):
        cfg = load_coordinator_config(config)
        report = collect_once(cfg, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        typer.echo(
            f"{verb} {report.blobs} blob(s) of ended runs, {report.partials} stale partial "
            f"upload(s) and {report.records} upload record(s): {report.bytes_freed} bytes "
            f"(grace {cfg.retention_grace_seconds:g} s)"
        )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
