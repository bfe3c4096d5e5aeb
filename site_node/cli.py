"""The ``site-node`` command: run a hospital's site daemon."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baton import exit_codes
from baton.entry import (
    configure_logging,
    exit_on_error,
    make_app,
    on_terminate,
    version_option,
)
from baton.errors import ConfigError, DataError, PkiError, TransportError
from baton.logs import LogFormatOpt

if TYPE_CHECKING:
    from site_node.daemon import SiteDaemon

# The commands import the daemon (torch, gRPC) when they run, so that
# ``site-node --help`` stays fast.

logger = logging.getLogger("site_node")

app = make_app("Baton site node: trains the travelling model on this site's data.")

_CODES = {
    ConfigError: exit_codes.SITE_CONFIG,
    PkiError: exit_codes.SITE_PKI,
    DataError: exit_codes.SITE_DATA,
    TransportError: exit_codes.SITE_UNREACHABLE,
}


@app.callback()
def _root(
    version: Annotated[bool, version_option("site-node")] = False,
) -> None:
    """Baton site node."""


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site config file (TOML).")],
    max_retries: Annotated[
        int,
        typer.Option(help="Exit after this many failed connection attempts in a row (0: never)."),
    ] = 0,
    log_format: LogFormatOpt = "text",
) -> None:
    """Connect to the coordinator and train whenever this site is assigned a hop."""
    from site_node.config import load_site_config
    from site_node.daemon import SiteDaemon

    configure_logging(log_format=log_format)
    with exit_on_error(_CODES, exit_codes.SITE_CONFIG):
        cfg = load_site_config(config)
        daemon = SiteDaemon(cfg, max_attempts=max_retries or None)
        logger.info("site %s starting; data from %s", daemon.site_id, cfg.data_dir)
        on_terminate(daemon.stop)
        errors: list[BaseException] = []
        worker = threading.Thread(target=_serve, args=(daemon, errors), name="site", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
        if errors:
            raise errors[0]
        logger.info("site %s stopped", daemon.site_id)


@app.command("check-data")
def check_data(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site config file (TOML).")],
) -> None:
    """Run the data gate on this site's data, as each hop does, and print its checklist.

    Prints one line per check (ok, warn or FAIL, with counts, never values) and a verdict.
    Exits 0 when the data passes, 204 when a check fails, 202 when the data cannot be read
    and 200 when the config is invalid.
    """
    from site_node.config import load_site_config
    from site_node.preflight import data_report

    with exit_on_error(_CODES, exit_codes.SITE_CONFIG):
        report = data_report(load_site_config(config))
    for line in [*report.lines(), report.verdict()]:
        typer.echo(line)
    if not report.passed:
        raise typer.Exit(exit_codes.SITE_DATA_GATE)


@app.command()
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site config file (TOML).")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the coordinator.")] = 5.0,
) -> None:
    """Preflight: check config, certificates, keys, data and the coordinator, then say READY.

    Prints one line per check (ok, warn or FAIL, saying what to do) and a verdict. Exits 0
    when every check passes and 205 when one fails. A coordinator that cannot be reached is
    named as "not listening", "TLS refused: name mismatch (cert names X, you dialled Y)",
    "TLS refused: unknown CA" or "expired".
    """
    from site_node.preflight import preflight

    checks = preflight(config, timeout=timeout)
    for line in [*checks.lines(), checks.verdict()]:
        typer.echo(line)
    if not checks.passed:
        raise typer.Exit(exit_codes.SITE_PREFLIGHT)


@app.command("worker-node")
def worker_node(
    shared_dir: Annotated[
        Path,
        typer.Option(
            help="The directory shared with the site's primary node ([training] shared_dir)."
        ),
    ],
    address: Annotated[
        str, typer.Option(help="This machine's address for the other nodes' workers.")
    ] = "",
) -> None:
    """Train with the site's primary node: join every hop it spreads over several machines."""
    from site_node.parallel.nodes import serve_node

    configure_logging()
    with exit_on_error(_CODES, exit_codes.SITE_CONFIG):
        if not shared_dir.is_dir():
            raise ConfigError(f"the shared directory {shared_dir} does not exist")
        stop = threading.Event()
        on_terminate(stop.set)
        joined = serve_node(shared_dir, stop=stop, local_addr=address)
        logger.info("worker node stopped after %d hops", joined)


def _serve(daemon: SiteDaemon, errors: list[BaseException]) -> None:
    """Runs the daemon, keeping what it raised for the main thread."""
    try:
        daemon.run()
    except BaseException as exc:
        errors.append(exc)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
