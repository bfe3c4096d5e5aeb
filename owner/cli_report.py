"""``baton report``: a run's record as a table, and as JSON for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baton import exit_codes
from baton.entry import exit_on_error
from owner.cli_runs import _CODES, AdminOpt, JsonOpt, admin_client, console


def register(app: typer.Typer) -> None:
    """Adds ``baton report`` to the ``baton`` app."""

    @app.command()
    def report(
        run_id: str,
        admin: AdminOpt,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Also write the report here: a path ending in .json gets the JSON alone; "
                "any other path is a directory that gets report.html (self-contained), "
                "report.json and the plots as PNG.",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Report a run: per hop its site, metrics before/after, seconds, bytes; the final
        evaluation; the plan's hash. With --out DIR, also as an HTML page with plots."""
        import json

        from baton.errors import ConfigError, ConflictError
        from baton.io import atomic_write
        from baton.v1 import common_pb2
        from owner.report import build_report, render_report

        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            run = client.get_run(run_id)
            if run.state == common_pb2.RUN_STATE_RUNNING:
                raise ConflictError(
                    f"run {run_id} is still running: follow it with `baton watch {run_id}` "
                    "and report it when it ends",
                    run_id=run_id,
                )
            data = build_report(run, client.watch(run_id))
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
            if out is not None and out.suffix.lower() != ".json":
                from owner.report_html import write_report_dir

                written = write_report_dir(data, out)
                typer.echo(f"report written to {written[-1]}", err=True)
            elif out is not None:
                try:
                    atomic_write(out, text, mode=0o644)
                except OSError as exc:
                    raise ConfigError(f"cannot write the report to {out}: {exc.strerror}") from None
            if as_json:
                typer.echo(text, nl=False)
            else:
                console.print(render_report(data))
