"""``baton check``: the study owner's preflight checklist, before submitting a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baton import exit_codes
from owner.cli_runs import AdminOpt

if TYPE_CHECKING:
    from baton.security.preflight import Checklist

# The checks import the key, TLS and gRPC code when they run, so that ``baton --help``
# stays fast.


def register(app: typer.Typer) -> None:
    """Adds ``check`` to the ``baton`` app."""

    @app.command()
    def check(
        admin: AdminOpt,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the coordinator.")] = 5.0,
    ) -> None:
        """Preflight: check admin config, certificates, keys and the coordinator, then say READY.

        Prints one line per check (ok, warn or FAIL, saying what to do) and a verdict. Exits
        0 when every check passes and 69 when one fails. A coordinator that cannot be
        reached is named as "not listening", "TLS refused: name mismatch (cert names X, you
        dialled Y)", "TLS refused: unknown CA" or "expired".
        """
        checks = owner_preflight(admin, timeout=timeout)
        for line in [*checks.lines(), checks.verdict()]:
            typer.echo(line)
        if not checks.passed:
            raise typer.Exit(exit_codes.CLI_PREFLIGHT)


def owner_preflight(path: Path, *, timeout: float = 5.0) -> Checklist:
    """Runs every check of the study owner whose admin config is at ``path``."""
    from baton.errors import BatonError
    from baton.security.preflight import Checklist, check_coordinator, check_party
    from owner.client import AdminClient
    from owner.config import load_admin_config

    checks = Checklist()
    loaded = check_party(checks, path, load_admin_config)
    if loaded is None:
        return checks
    cfg, material = loaded
    if material is not None and material.identity.kind != "admin":
        checks.add("role", "FAIL", f"{material.identity.spiffe_id} is not an admin certificate")
    if not check_coordinator(checks, cfg, material, timeout=timeout) or material is None:
        return checks
    try:
        with AdminClient(cfg.coordinator, material, server_name=cfg.server_name or None) as c:
            sites = c.list_sites()
    except BatonError as exc:
        checks.add("admin service", "FAIL", exc.message)
        return checks
    online = sorted(s.site_id for s in sites if s.online)
    checks.add(
        "admin service",
        "ok",
        f"{len(sites)} site(s) registered, {len(online)} online: {', '.join(online) or 'none'}",
    )
    return checks
