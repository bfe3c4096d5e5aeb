"""``baton bench hop``: one relayed, sealed hop against its baselines, on this machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from baton import exit_codes
from baton.entry import make_app

_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hop_bench.py"
"""The measurement (it plays the coordinator's and the sites' parts as processes, which the
owner's tools never import)."""


def parse_size(text: str) -> int:
    """Bytes in ``text``: a whole number with an optional unit (B, KiB, MiB, GiB).

    Raises:
        typer.BadParameter: the text is not such a size, or is zero.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a size such as 512MiB or 2GiB")
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def register(app: typer.Typer) -> None:
    """Adds ``bench`` (with ``hop``) to the ``baton`` app."""
    bench = make_app("Measure Baton on this machine.")
    app.add_typer(bench, name="bench", help="Measure Baton on this machine.")

    @bench.command()
    def hop(
        size: Annotated[str, typer.Option(help="Model size, e.g. 128MiB or 2GiB.")] = "512MiB",
        reps: Annotated[int, typer.Option(min=1, max=50, help="Repetitions (medians).")] = 3,
        out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
        own_copy: Annotated[
            str,
            typer.Option(
                help="When the sender seals the copy a site keeps sealed to itself: beside "
                "its upload (as a site does), before it, or none."
            ),
        ] = "beside",
    ) -> None:
        """Time one hop (seal, upload, relay, download, open) through a real coordinator
        over mTLS, beside raw TCP, a plain gRPC relay with and without TLS, and cp.

        Prints a table and, with --out, writes JSON (size_bytes, hop_seconds, hop_gbps,
        relay_mtls_gbps, tcp_gbps, ratios, stages, rss_above_idle_mib). Needs a source
        checkout (the benchmarks folder) and about three times the size in free disk.
        """
        if own_copy not in ("beside", "before", "none"):
            raise typer.BadParameter("must be beside, before or none", param_hint="--own-copy")
        if not SCRIPT.is_file():
            typer.echo(f"error: {SCRIPT} is missing: run this from a source checkout", err=True)
            raise typer.Exit(exit_codes.CLI_CONFIG)
        args = [sys.executable, str(SCRIPT), "--size-bytes", str(parse_size(size))]
        args += ["--reps", str(reps), "--own-copy", own_copy]
        args += ["--out", str(out)] if out else []
        raise typer.Exit(subprocess.run(args, check=False).returncode)
