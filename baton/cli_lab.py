"""``baton lab``: runs the ordering lab's benchmark grid and writes its results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from baton import exit_codes
from baton.entry import fail


def register(app: typer.Typer) -> None:
    """Adds the ``lab`` command to ``app``."""
    app.command(name="lab")(lab)


def lab(
    out: Annotated[Path, typer.Option(help="Directory for results.json, results.md, the plots.")],
    grid: Annotated[
        str, typer.Option(help="smoke, reduced, acceptance, full, or the same with -remedies.")
    ] = "smoke",
    jobs: Annotated[
        int, typer.Option(min=1, help="Worker processes running trials (one torch thread each).")
    ] = 1,
) -> None:
    """Measure how much the order of sites matters and how well each strategy picks it."""
    import torch

    from baton.lab.grid import GRIDS, run_grid
    from baton.lab.report import write_outputs

    if grid not in GRIDS:
        fail(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}", exit_codes.CLI_CONFIG)
    console = Console(highlight=False, stderr=True)
    torch.set_num_threads(1)
    chosen = GRIDS[grid]
    records, seconds, left_out = run_grid(chosen, console.print, jobs=jobs)
    meta = {
        "grid": chosen.name,
        "seconds": seconds,
        "seeds": list(chosen.seeds),
        "repetitions": chosen.repetitions,
        "torch_threads": 1,
        "jobs": jobs,
        "plot": "percentiles.png (matplotlib, Agg) and percentiles.svg",
        "cells_left_out": left_out,
    }
    for cell in left_out:
        console.print(
            f"left out {cell['dataset']} {cell['partition']} K={cell['k']} "
            f"epochs={cell['local_epochs']} cycles={cell['cycles']}: {cell['reason']}"
        )
    for path in write_outputs(out, records, meta):
        console.print(f"wrote {path}")
    console.print(f"grid {chosen.name!r}: {len(chosen.cells)} cells in {seconds:.1f} s")
