"""``baton provision``: every party's kit (certificates, config, README) from one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.entry import exit_on_error
from baton.errors import ConfigError, PkiError

# The key and certificate code is imported when the command runs, so that
# ``baton --help`` stays fast.

_CODES = {ConfigError: exit_codes.CLI_CONFIG, PkiError: exit_codes.CLI_PKI}


def register(app: typer.Typer) -> None:
    """Adds ``provision`` to the ``baton`` app."""

    @app.command()
    def provision(
        federation: Annotated[
            Path, typer.Argument(help="Federation description (TOML): name, coordinator, sites.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Directory for the kits (new).")],
    ) -> None:
        """Make one kit per party: the CA, the coordinator, each site and the study owner.

        Each kit holds its party's certificates and keys, a filled-in config and a
        README with its next steps. Keep ca/ offline; hand every other directory to its party.
        """
        from owner.provision import load_spec
        from owner.provision import provision as make_kits

        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            spec = load_spec(federation)
            kits = make_kits(spec, out)
        console = Console(highlight=False, soft_wrap=True)
        console.print(
            f"provisioned federation [bold]{escape(spec.name)}[/bold] in {escape(str(out))}"
        )
        rows = [
            ("ca", kits.ca, "keep offline"),
            ("coordinator", kits.coordinator, f"serves {spec.coordinator.dialled}"),
            *(
                (
                    f"site {s}",
                    kits.site(s),
                    "generates its own keys" if s in spec.own_keys else "",
                )
                for s in spec.sites
            ),
            ("owner", kits.owner, spec.owner),
        ]
        for party, path, note in rows:
            console.print(f"  {party:<24} {escape(str(path))}  {escape(note)}")
