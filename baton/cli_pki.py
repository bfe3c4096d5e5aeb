"""``baton pki``: create a federation CA and issue certificates from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.entry import make_app
from baton.errors import BatonError
from baton.pki import (
    CA_CERT_FILE,
    KINDS,
    Identity,
    create_ca,
    federation_of_ca,
    issue,
    read_file,
)

pki_app = make_app("Create a federation CA and issue TLS certificates from it.", name="pki")


def _fail(exc: BatonError) -> typer.Exit:
    """Prints ``error: <message>`` as one red line on stderr; returns the exit to raise."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"error: {escape(exc.message)}", style="red"
    )
    return typer.Exit(exit_codes.CLI_PKI)


@pki_app.command("init")
def init_command(
    federation: Annotated[
        str, typer.Option("--federation", help="Federation name, e.g. acme-health.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for ca.pem and ca.key.")],
) -> None:
    """Create the federation's root CA (keep ca.key offline)."""
    try:
        ca_pem = create_ca(out, federation)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"created the CA of federation [bold]{escape(federation)}[/bold]")
    console.print(f"  certificate  {escape(str(ca_pem))}")
    console.print(f"  private key  {escape(str(out / 'ca.key'))}  (mode 0600; keep it offline)")


@pki_app.command("issue")
def issue_command(
    ca: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
    kind: Annotated[
        str, typer.Option("--kind", click_type=click.Choice(KINDS), help="Kind of party.")
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the party, e.g. st-mary.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the certificate and key.")],
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="Extra DNS SAN (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="Extra IP address SAN (repeatable).")
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
) -> None:
    """Issue a TLS certificate and a fresh key for one party of the federation."""
    try:
        identity = Identity(federation=_federation(ca), kind=kind, name=name)
        files = issue(ca, out, identity, dns_names=dns or (), ip_addresses=ip or (), days=days)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"issued [bold]{escape(identity.spiffe_id)}[/bold]")
    console.print(f"  certificate     {escape(str(files.cert))}")
    console.print(f"  private key     {escape(str(files.key))}  (mode 0600)")
    console.print(f"  CA certificate  {escape(str(files.ca))}")


def _federation(ca_dir: Path) -> str:
    """The federation of the CA in ``ca_dir``."""
    return federation_of_ca(read_file(ca_dir / CA_CERT_FILE, role="CA certificate"))
