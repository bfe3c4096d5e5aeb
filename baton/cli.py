"""The ``baton`` command: the demo, the PKI tools, and the study owner's run commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from baton import exit_codes
from baton.cli_admin import register
from baton.cli_lab import register as register_lab
from baton.cli_pki import pki_app
from baton.cli_verify import register as register_verify
from baton.demo import DemoOptions, run_demo
from baton.entry import configure_logging, exit_on_error, make_app
from baton.errors import ConfigError, PkiError, TransportError
from baton.procs import ProcessExited

app = make_app("Baton: sequential learning across hospitals.")
app.add_typer(pki_app, name="pki", help="Create the federation CA and issue certificates.")
register(app)
register_verify(app)
register_lab(app)


@app.command()
def demo(
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    cycles: Annotated[int, typer.Option(help="Passes over all hospitals.")] = 3,
    dataset: Annotated[str, typer.Option(help="breast_cancer, digits or wine.")] = "breast_cancer",
    alpha: Annotated[float, typer.Option(help="Dirichlet label-skew concentration.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for data split, model and order.")] = 0,
    strategy: Annotated[str, typer.Option(help="Ordering strategy.")] = "learned",
    workdir: Annotated[
        Path | None, typer.Option(help="Keep PKI, state, data and logs here.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
) -> None:
    """Run a real multi-site training on this machine: coordinator and sites as processes."""
    configure_logging("WARNING")
    console = Console(highlight=False)
    codes = {
        ConfigError: exit_codes.CLI_CONFIG,
        PkiError: exit_codes.CLI_PKI,
        TransportError: exit_codes.CLI_UNREACHABLE,
        ProcessExited: exit_codes.CLI_DEMO_PROCESS,
    }
    with exit_on_error(codes, exit_codes.CLI_RUN_FAILED):
        try:
            opts = DemoOptions(
                sites=sites,
                cycles=cycles,
                dataset=dataset,
                alpha=alpha,
                seed=seed,
                strategy=strategy,
                workdir=workdir,
                report=report,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        run_demo(opts, console)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
