"""``baton`` commands that verify after the fact: an audit log, and a run's manifest chain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from baton import exit_codes
from baton.entry import exit_on_error, fail
from baton.errors import ConfigError, PkiError, TransportError
from owner.cli_runs import AdminOpt, admin_client

if TYPE_CHECKING:
    from rich.table import Table

    from baton.security.chain import ChainReport, HopEvidence
    from baton.v1 import admin_pb2

# The commands import the audit, chain and stub code when they run, so that
# ``baton --help`` stays fast.

console = Console(highlight=False)
_CODES = {
    ConfigError: exit_codes.CLI_CONFIG,
    PkiError: exit_codes.CLI_PKI,
    TransportError: exit_codes.CLI_UNREACHABLE,
}


def register(app: typer.Typer) -> None:
    """Adds ``verify-log`` and ``verify-run`` to the ``baton`` app."""

    @app.command("verify-log")
    def verify_log_command(
        log: Annotated[Path, typer.Argument(help="The audit log (JSON lines).")],
        key: Annotated[
            Path,
            typer.Option("--key", help="The signer's public key or certificate (PEM)."),
        ],
    ) -> None:
        """Check an audit log's chain and signatures; exit non-zero at the first break."""
        from baton.security.audit import load_public_key, verify_log
        from baton.security.pki import read_file

        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            public_key = load_public_key(read_file(key, role="public key"))
            report = verify_log(log, public_key=public_key)
        if not report.ok:
            fail(
                f"{log}: {report.first_break} ({report.entries} entries verified before it)",
                exit_codes.CLI_ERROR,
            )
        console.print(f"{escape(str(log))}: {report.entries} entries, ok (head {report.head})")

    @app.command("verify-run")
    def verify_run_command(
        run_id: Annotated[str, typer.Argument(help="The run to verify.")], admin: AdminOpt
    ) -> None:
        """Check a run's chain of sealed hops against the CA and your signed plan."""
        from baton.security.chain import verify_run_chain
        from baton.security.pki import read_file
        from baton.security.sealing import ENCRYPTION_CERT_FILE, SIGNING_CERT_FILE
        from owner.config import load_admin_config

        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            cfg = load_admin_config(admin)
            ca_pem = cfg.tls.load().ca_pem
            owner_signing = read_file(
                cfg.keys_dir / SIGNING_CERT_FILE, role="study owner's signing certificate"
            )
            owner_encryption = read_file(
                cfg.keys_dir / ENCRYPTION_CERT_FILE, role="study owner's encryption certificate"
            )
            with admin_client(admin) as client:
                run = client.get_run(run_id)
                sites = {s.site_id: s for s in client.list_sites()}
            hops, next_site = run_evidence(run, sites)
            report = verify_run_chain(
                ca_pem=ca_pem,
                run_id=run_id,
                plan_toml=run.plan_toml,
                plan_signature=run.plan_signature,
                owner_signing_pem=owner_signing,
                owner_encryption_pem=owner_encryption,
                hops=hops,
                next_site_id=next_site,
            )
        console.print(hop_table(hops, report))
        if not report.ok:
            fail(f"run {run_id}: {report.describe()}", exit_codes.CLI_ERROR)
        console.print(f"run {run_id}: {report.describe()}, chain intact")


def run_evidence(
    run: admin_pb2.Run, sites: Mapping[str, admin_pb2.Site], *, upto: int | None = None
) -> tuple[list[HopEvidence], str | None]:
    """The evidence of a run's completed hops, and the site the last one must be sealed to.

    Args:
        run: The run, with its hops (``GetRun``).
        sites: The registered sites, by id.
        upto: The last hop index to take (None: every completed hop).

    Returns:
        The hops that carry an output manifest, in order, each with its site's
        certificates (empty if the site is unknown: the chain then breaks there); and the
        next hop's site, or None when the last completed hop is the run's last (sealed to
        the owner).
    """
    from baton.security.chain import HopEvidence

    hops = [
        HopEvidence(
            hop_index=h.hop_index,
            site_id=h.site_id,
            blob_id=h.output.blob_id,
            blob_size=h.output.size,
            manifest=h.output_manifest,
            signing_cert_pem=sites[h.site_id].signing_certificate_pem if h.site_id in sites else "",
            encryption_cert_pem=(
                sites[h.site_id].encryption_certificate_pem if h.site_id in sites else ""
            ),
        )
        for h in sorted(run.hops, key=lambda h: h.hop_index)
        if h.output_manifest and (upto is None or h.hop_index <= upto)
    ]
    following = hops[-1].hop_index + 1 if hops else 0
    if following >= run.total_hops:
        return hops, None
    names = {h.hop_index: h.site_id for h in run.hops}
    return hops, names.get(following, "")


def hop_table(hops: Sequence[HopEvidence], report: ChainReport) -> Table:
    """One row per hop: its site, blob, recipient and whether it verified."""
    from rich.table import Table

    table = Table("hop", "site", "blob", "sealed to", "status")
    for i, hop in enumerate(hops):
        if i < report.hops_verified:
            recipient, status = report.manifests[i].recipient, "[green]ok[/]"
        elif i == report.broken_hop:
            recipient, status = "", f"[bold red]broken:[/] {escape(report.reason or '')}"
        else:
            recipient, status = "", "not checked"
        table.add_row(
            str(hop.hop_index),
            escape(hop.site_id),
            escape(hop.blob_id[:16]),
            escape(recipient),
            status,
        )
    return table
