"""``baton logs``: a run's events, one line each (hops and cycles from 1), or as JSON lines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from baton import exit_codes
from baton.entry import exit_on_error
from owner.cli_runs import _CODES, AdminOpt, admin_client

if TYPE_CHECKING:
    from collections.abc import Iterator

    from baton.v1 import admin_pb2
    from owner.client import AdminClient

IDLE_SECONDS = 1.0
"""Without ``--follow``, a running run's log ends once no stored event came for this long."""


def register(app: typer.Typer) -> None:
    """Adds ``baton logs`` to the ``baton`` app."""

    @app.command()
    def logs(
        run_id: str,
        admin: AdminOpt,
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object per event and line.")
        ] = False,
        follow: Annotated[
            bool,
            typer.Option("--follow", "-f", help="Keep printing events until the run ends."),
        ] = False,
    ) -> None:
        """Print a run's events to date, one per line (with --follow, until the run ends)."""
        import json

        with exit_on_error(_CODES, exit_codes.CLI_ERROR), admin_client(admin) as client:
            cycles = _cycles(client, run_id)
            for ev in _events(client, run_id, follow=follow):
                record = event_record(ev, cycles)
                if record["hop"] is not None and record["cycle"] is None:
                    cycles = _cycles(client, run_id)
                    record = event_record(ev, cycles)
                if as_json:
                    typer.echo(json.dumps(record, sort_keys=True))
                else:
                    typer.echo(event_line(record))


def _cycles(client: AdminClient, run_id: str) -> dict[int, int]:
    return {h.hop_index: h.cycle for h in client.get_run(run_id).hops}


def _events(client: AdminClient, run_id: str, *, follow: bool) -> Iterator[admin_pb2.RunEvent]:
    """The run's events; without ``follow``, only those stored now.

    The coordinator's stream sends the stored events at once, then waits for new ones until
    the run ends; a reader thread lets this stop after :data:`IDLE_SECONDS` of quiet.
    """
    if follow:
        yield from client.watch(run_id)
        return
    import queue
    import threading

    inbox: queue.Queue[admin_pb2.RunEvent | BaseException | None] = queue.Queue()

    def read() -> None:
        try:
            for ev in client.watch(run_id):
                inbox.put(ev)
        except BaseException as exc:  # handed to the caller, who raises it
            inbox.put(exc)
        inbox.put(None)

    threading.Thread(target=read, name="baton-logs", daemon=True).start()
    while True:
        try:
            item = inbox.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            return
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _on_hop(kind: str) -> bool:
    """Whether an event of ``kind`` concerns one hop (the others concern the run, or a
    site's final score)."""
    return kind.startswith("hop_") or kind == "fault"


def event_record(ev: admin_pb2.RunEvent, cycles: dict[int, int]) -> dict[str, Any]:
    """One event as JSON-ready data; ``hop`` and ``cycle`` from 1 (``None`` for run events)."""
    from datetime import UTC, datetime

    from baton.v1 import admin_pb2

    when = datetime.fromtimestamp(ev.time_unix_ms / 1000, tz=UTC)
    kind = admin_pb2.EventKind.Name(ev.kind).removeprefix("EVENT_KIND_").lower()
    on_hop = _on_hop(kind)
    cycle = cycles.get(ev.hop_index) if on_hop else None
    return {
        "seq": ev.seq,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "run_id": ev.run_id,
        "kind": kind,
        "hop": ev.hop_index + 1 if on_hop else None,
        "cycle": None if cycle is None else cycle + 1,
        "site": ev.site_id or None,
        "message": ev.message,
        "metrics": dict(sorted(ev.metrics.items())),
    }


def event_line(record: dict[str, Any]) -> str:
    """The line a person reads for an event record."""
    where = []
    if record["hop"] is not None:
        where.append(f"hop {record['hop']}")
    if record["cycle"] is not None:
        where.append(f"cycle {record['cycle']}")
    if record["site"]:
        where.append(record["site"])
    extra = " ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items())
    parts = (record["time"], f"{record['seq']:>4}", f"{record['kind']:<14}", " ".join(where))
    return " ".join(p for p in (*parts, record["message"], extra) if p)
