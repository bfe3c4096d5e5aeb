"""``baton`` commands for the study owner and operator: submit, watch, list, cancel, fetch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from baton import exit_codes
from baton.entry import exit_on_error, fail
from baton.errors import ConfigError, PkiError, TransportError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from baton.v1 import common_pb2
    from owner.client import AdminClient

# The commands import gRPC, the stubs and the key code when they run, so that
# ``baton --help`` stays fast.
console = Console(highlight=False)
_CODES = {
    ConfigError: exit_codes.CLI_CONFIG,
    PkiError: exit_codes.CLI_PKI,
    TransportError: exit_codes.CLI_UNREACHABLE,
}

REJECTIONS = frozenset({"rejected_hop", "untrusted_party"})
"""Reasons a site reports when a sealed model or its sender failed verification."""

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

AdminOpt = Annotated[
    Path,
    typer.Option(
        "--admin",
        envvar="BATON_ADMIN_CONFIG",
        help="Admin config (TOML): coordinator address and TLS files.",
    ),
]


def admin_client(path: Path) -> AdminClient:
    """A client of the coordinator's AdminService, configured by the admin config at ``path``."""
    from owner.client import AdminClient
    from owner.config import load_admin_config

    cfg = load_admin_config(path)
    return AdminClient(cfg.coordinator, cfg.tls.load(), server_name=cfg.server_name or None)


def _state(value: common_pb2.RunState.ValueType) -> str:
    from baton.v1 import common_pb2

    return common_pb2.RunState.Name(value).removeprefix("RUN_STATE_").lower()


def register(app: typer.Typer) -> None:
    """Adds the admin commands to the ``baton`` app."""

    @app.command()
    def submit(
        plan: Annotated[Path, typer.Argument(help="Run plan (TOML).")],
        admin: AdminOpt,
        watch: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = False,
        start_from: Annotated[
            Path | None,
            typer.Option(
                "--start-from",
                help="Model file hop 1 starts from (e.g. from `baton fetch RUN OUT --hop "
                "escrow`); the plan must pin its SHA-256 as [model] start_from.",
            ),
        ] = None,
    ) -> None:
        """Submit a run plan to the coordinator."""
        from baton.plan import read_plan_text
        from baton.security.sealing import AppKeys
        from owner.config import load_admin_config
        from owner.start_model import check_start_from, submit_from_model

        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            _check_plan(plan)  # locally first: clearer errors, no round trip
            text = read_plan_text(plan)
            check_start_from(text, start_from, source=str(plan))
            cfg = load_admin_config(admin)
            keys = AppKeys.load(cfg.keys_dir)
            with admin_client(admin) as client:
                if start_from is None:
                    run = client.create_run(text, keys)
                else:
                    run = submit_from_model(
                        client, text, start_from, owner=keys, ca_pem=cfg.tls.load().ca_pem
                    )
                console.print(f"run {run.run_id} created ({run.total_hops} hops)")
                if watch:
                    _watch(client, run.run_id)

    @app.command()
    def runs(admin: AdminOpt, as_json: JsonOpt = False) -> None:
        """List runs, newest first."""
        from rich.table import Table

        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            if as_json:
                _print_json([_as_dict(r) for r in client.list_runs()])
                return
            table = Table("run", "name", "state", "hops", "strategy")
            for r in client.list_runs():
                table.add_row(r.run_id, r.name, _state(r.state), str(r.total_hops), r.strategy)
            console.print(table)

    @app.command()
    def status(run_id: str, admin: AdminOpt, as_json: JsonOpt = False) -> None:
        """Show one run hop by hop, with the plan's primary metric."""
        from baton.v1 import admin_pb2, common_pb2
        from owner.tables import hops_table, primary_metric, scores_table

        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            r = client.get_run(run_id)
            if as_json:
                _print_json(_as_dict(r))
                return
            console.print(f"run {r.run_id} '{r.name}': {_state(r.state)} {r.error}")
            metric = primary_metric(r.plan_toml)
            console.print(hops_table(r, metric))
            if r.state == common_pb2.RUN_STATE_RUNNING:
                return
            evaluated = [
                e for e in client.watch(run_id) if e.kind == admin_pb2.EVENT_KIND_SITE_EVALUATED
            ]
            if evaluated:
                console.print(scores_table(evaluated, metric))

    @app.command()
    def watch(run_id: str, admin: AdminOpt) -> None:
        """Follow a run's events until it ends."""
        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            _watch(client, run_id)

    @app.command()
    def cancel(run_id: str, admin: AdminOpt, reason: str = "") -> None:
        """Cancel a running run."""
        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            r = client.cancel_run(run_id, reason)
            console.print(f"run {r.run_id}: {_state(r.state)}")

    @app.command()
    def fetch(
        run_id: str,
        out: Path,
        admin: AdminOpt,
        hop: Annotated[
            str | None,
            typer.Option(
                "--hop",
                help="Fetch hop N's stored output (from 1) of a run in any state, or, with "
                "'escrow', the newest hop you can open: the last hop, or any hop when the "
                "plan asks for escrow ([security] escrow_to_owner = true).",
            ),
        ] = None,
    ) -> None:
        """Download the final model of a succeeded run (or, with --hop, one hop's model),
        verify and open it, and write it as safetensors."""
        from baton.security.sealing import AppKeys
        from owner.config import load_admin_config
        from owner.fetch import fetch_result
        from owner.fetch_hop import fetch_hop, parse_hop

        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            number = parse_hop(hop) if hop is not None else None
            with admin_client(admin) as client:
                cfg = load_admin_config(admin)
                keys, ca_pem = AppKeys.load(cfg.keys_dir), cfg.tls.load().ca_pem
                if hop is None:
                    manifest = fetch_result(client, run_id, out, owner=keys, ca_pem=ca_pem)
                    which = ""
                else:
                    got = fetch_hop(client, run_id, number, out, owner=keys, ca_pem=ca_pem)
                    manifest = got.manifest
                    which = f": hop {got.number} of {got.total_hops}, trained at {got.site_id}"
                    if got.newest:
                        which += ", the newest hop you can open"
            console.print(
                f"wrote {manifest.plaintext_length} bytes to {out}{which} "
                f"(sealed by {manifest.sender}, verified)"
            )

    @app.command()
    def sites(admin: AdminOpt, as_json: JsonOpt = False) -> None:
        """List registered sites: lease, last seen, software version, data."""
        import time

        from owner.tables import sites_table

        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            if as_json:
                _print_json([_as_dict(s) for s in client.list_sites()])
                return
            console.print(sites_table(client.list_sites(), time.time_ns() // 1_000_000))


def _watch(client: AdminClient, run_id: str) -> None:
    """Shows a run live until it ends, then its summary; exits with the run's outcome.

    Exits 63 when the run failed, 67 when it was cancelled and 68 when it failed because a
    site rejected a sealed model (:func:`run_exit_code`); 130 on Ctrl-C, saying that the
    run goes on and how to re-attach or cancel it.
    """
    from baton.v1 import common_pb2
    from owner.watch import follow

    try:
        final, _ = follow(client, run_id, console)
    except KeyboardInterrupt:
        client.close()
        fail(
            f"stopped watching; run {run_id} goes on. Re-attach with `baton watch {run_id}`, "
            f"stop it with `baton cancel {run_id}`",
            exit_codes.INTERRUPTED,
        )
        return
    if final.state != common_pb2.RUN_STATE_SUCCEEDED:
        client.close()
        fail(
            f"run {run_id} ended {_state(final.state)}: {final.error}",
            run_exit_code(final.state, final.error),
        )


def run_exit_code(state: common_pb2.RunState.ValueType, error: str) -> int:
    """The exit code for a run that ended in ``state`` with ``error``.

    A failed run whose failing hop (``hop N at SITE failed: REASON: ...``) names one of
    :data:`REJECTIONS` was rejected (68); any other failure is 63; a cancelled run is 67;
    a succeeded one 0.
    """
    from baton.v1 import common_pb2

    if state == common_pb2.RUN_STATE_SUCCEEDED:
        return exit_codes.OK
    if state == common_pb2.RUN_STATE_CANCELLED:
        return exit_codes.CLI_RUN_CANCELLED
    reason = error.partition(" failed: ")[2].partition(":")[0].strip()
    if reason in REJECTIONS:
        return exit_codes.CLI_RUN_REJECTED
    return exit_codes.CLI_RUN_FAILED


def _as_dict(message: Message) -> object:
    """A protobuf message as JSON-ready data, with its proto field names."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _print_json(data: object) -> None:
    """Prints ``data`` as indented JSON on stdout, uncoloured."""
    import json

    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _check_plan(path: Path) -> None:
    """Validates a plan file, the names it uses, its model and its task pin against what is
    installed here: what would fail at hop 0 fails here, before any round trip."""
    from baton.ml.models import known_models
    from baton.ml.tasks import check_task_pin, known_tasks
    from baton.ml.validate import check_model
    from baton.plan import check_names, load_plan
    from ordering import known_strategies
    from owner.plan_metric import check_primary_metric

    run_plan = load_plan(path)
    check_names(
        run_plan,
        source=str(path),
        models=known_models(),
        datasets=known_tasks(),
        strategies=known_strategies(),
    )
    check_model(run_plan, source=str(path))
    check_task_pin(run_plan.task, pinned_by=str(path), here="this machine")
    check_primary_metric(run_plan.task, source=str(path))
