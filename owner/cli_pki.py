"""``baton pki``: create a federation CA, issue certificates from it, and revoke them."""

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
from baton.io import atomic_write
from baton.security.identity import CA_CERT_FILE, DEFAULT_CRL_DAYS, KINDS, REASONS, Identity

# The commands import the key and certificate code when they run, so that
# ``baton --help`` stays fast.
pki_app = make_app(
    "Create a federation CA, issue TLS certificates from it (or from requests), and revoke them.",
    name="pki",
)


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
    from baton.security.pki import create_ca

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
        list[str] | None, typer.Option("--dns", help="Extra DNS SAN of a coordinator (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="Extra IP SAN of a coordinator (repeatable).")
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
) -> None:
    """Issue a TLS certificate and a fresh key for one party of the federation."""
    from baton.security.pki import issue

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


@pki_app.command("keygen")
def keygen_command(
    federation: Annotated[str, typer.Option("--federation", help="Federation name.")],
    kind: Annotated[
        str, typer.Option("--kind", click_type=click.Choice(KINDS), help="Kind of party.")
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the party, e.g. st-mary.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the keys (created 0700).")],
) -> None:
    """At the party: create signing and encryption keys, and a request for the CA.

    The private keys stay in --out; only key-request.pem goes to the CA operator.
    """
    from baton.security.keys import (
        generate_keys,
        load_encryption_key,
        load_signing_key,
        make_key_request,
    )
    from baton.security.sealing import KEY_REQUEST_FILE

    try:
        identity = Identity(federation=federation, kind=kind, name=name)
        files = generate_keys(out)
        request = make_key_request(
            identity,
            load_signing_key(files.signing),
            load_encryption_key(files.encryption).public_key(),
        )
        atomic_write(out / KEY_REQUEST_FILE, request, mode=0o644)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"created the keys of [bold]{escape(identity.spiffe_id)}[/bold]")
    console.print(f"  private keys  {escape(str(files.signing))}, {escape(str(files.encryption))}")
    console.print(f"  request       {escape(str(out / KEY_REQUEST_FILE))}  (send to the CA)")


@pki_app.command("certify")
def certify_command(
    ca: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
    request: Annotated[Path, typer.Option("--request", help="The party's key-request.pem.")],
    kind: Annotated[
        str, typer.Option("--kind", click_type=click.Choice(KINDS), help="Kind of party.")
    ],
    name: Annotated[str, typer.Option("--name", help="Who the operator checked the party is.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the two certificates.")],
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
) -> None:
    """At the CA: certify a party's signing and encryption keys from its request."""
    from baton.security.keys import certify
    from baton.security.pki import read_file
    from baton.security.sealing import ENCRYPTION_CERT_FILE, SIGNING_CERT_FILE

    try:
        identity = Identity(federation=_federation(ca), kind=kind, name=name)
        signing_pem, encryption_pem = certify(
            ca, read_file(request, role="key request"), identity=identity, days=days
        )
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / SIGNING_CERT_FILE, signing_pem, mode=0o644)
        atomic_write(out / ENCRYPTION_CERT_FILE, encryption_pem, mode=0o644)
    except BatonError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(BatonError(f"cannot write to {out}: {exc.strerror}")) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"certified the keys of [bold]{escape(identity.spiffe_id)}[/bold]")
    console.print(
        f"  {escape(str(out / SIGNING_CERT_FILE))}, {escape(str(out / ENCRYPTION_CERT_FILE))}"
    )


@pki_app.command("tls-request")
def tls_request_command(
    federation: Annotated[str, typer.Option("--federation", help="Federation name.")],
    kind: Annotated[
        str, typer.Option("--kind", click_type=click.Choice(KINDS), help="Kind of party.")
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the party, e.g. st-mary.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the key and request.")],
) -> None:
    """At the party: create its TLS key and a certificate signing request for the CA.

    The private key stays in --out; only NAME.csr goes to the CA operator.
    """
    from baton.security.pki_csr import make_tls_request

    try:
        identity = Identity(federation=federation, kind=kind, name=name)
        files = make_tls_request(identity, out)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"created the TLS key of [bold]{escape(identity.spiffe_id)}[/bold]")
    console.print(f"  private key  {escape(str(files.key))}  (mode 0600; never leaves here)")
    console.print(f"  request      {escape(str(files.request))}  (send to the CA)")


@pki_app.command("tls-certify")
def tls_certify_command(
    ca: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
    request: Annotated[Path, typer.Option("--request", help="The party's NAME.csr.")],
    kind: Annotated[
        str, typer.Option("--kind", click_type=click.Choice(KINDS), help="Kind of party.")
    ],
    name: Annotated[str, typer.Option("--name", help="Who the operator checked the party is.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the certificate.")],
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="DNS SAN of a coordinator (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="IP SAN of a coordinator (repeatable).")
    ] = None,
) -> None:
    """At the CA: issue a party's TLS certificate from its certificate signing request."""
    from baton.security.pki import read_file
    from baton.security.pki_csr import issue_from_request

    try:
        identity = Identity(federation=_federation(ca), kind=kind, name=name)
        pem = read_file(request, role="TLS request")
        cert, ca_copy = issue_from_request(
            ca, out, pem, identity=identity, days=days, dns_names=dns or (), ip_addresses=ip or ()
        )
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"issued [bold]{escape(identity.spiffe_id)}[/bold] from its request")
    console.print(f"  certificate     {escape(str(cert))}")
    console.print(f"  CA certificate  {escape(str(ca_copy))}")


@pki_app.command("revoke")
def revoke_command(
    ca: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
    cert: Annotated[Path, typer.Option("--cert", help="The certificate to revoke (PEM).")],
    crl: Annotated[Path, typer.Option("--crl", help="The CRL file to update (created if new).")],
    reason: Annotated[
        str,
        typer.Option("--reason", click_type=click.Choice(REASONS), help="RFC 5280 reason."),
    ] = "unspecified",
    days: Annotated[
        int, typer.Option("--days", help="Days until the new CRL goes stale.")
    ] = DEFAULT_CRL_DAYS,
) -> None:
    """Revoke a certificate: add its serial to the CRL signed by the CA.

    Copy the CRL to the coordinator (its config's crl); it is picked up without a restart.
    """
    from baton.security.pki import load_certificate, read_file
    from baton.security.revocation import revoke

    try:
        pem = read_file(cert, role="certificate")
        serial = load_certificate(pem, source=f"certificate {cert}").serial_number
        revoke(ca, crl, pem, reason=reason, days=days)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"revoked serial [bold]{serial:x}[/bold] ({escape(reason)})")
    console.print(f"  CRL  {escape(str(crl))}  (fresh for {days} days)")


@pki_app.command("crl")
def crl_command(
    ca: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
    crl: Annotated[Path, typer.Option("--crl", help="The CRL file to create or refresh.")],
    days: Annotated[
        int, typer.Option("--days", help="Days until the new CRL goes stale.")
    ] = DEFAULT_CRL_DAYS,
) -> None:
    """Issue the CRL afresh (an empty one if new) before the current one goes stale."""
    from baton.security.revocation import issue_crl

    try:
        issued = issue_crl(ca, crl, days=days)
    except BatonError as exc:
        raise _fail(exc) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"issued CRL number [bold]{issued.number}[/bold] "
        f"({len(issued.serials)} revoked, fresh until {issued.next_update:%Y-%m-%d %H:%M} UTC)"
    )
    console.print(f"  CRL  {escape(str(crl))}")


def _federation(ca_dir: Path) -> str:
    """The federation of the CA in ``ca_dir``."""
    from baton.security.pki import federation_of_ca, read_file

    return federation_of_ca(read_file(ca_dir / CA_CERT_FILE, role="CA certificate"))
