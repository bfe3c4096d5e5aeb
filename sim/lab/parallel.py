"""Runs a grid's trials one by one or in worker processes, and gathers them per cell."""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.lab.grid import Cell, Grid, Skipped, Trial

__all__ = ["trials_by_cell"]

TrialFn = Callable[["Cell", "Grid", int], "Trial | Skipped"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _one_thread() -> None:
    """Worker initializer: one torch thread per process, as the serial lab runs, and (on
    Linux) a SIGTERM when the parent dies, so a killed ``baton lab`` leaves no workers."""
    import torch

    torch.set_num_threads(1)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)


def _cost(cell: Cell) -> int:
    """Rough relative cost of one trial: orders trained times epochs times cycles."""
    return min(math.factorial(cell.k), 720) * cell.local_epochs * cell.cycles


def trials_by_cell(
    cells: Sequence[Cell], grid: Grid, run: TrialFn, *, jobs: int = 1
) -> Iterator[tuple[int, list[Trial | Skipped]]]:
    """Yields ``(index, trials)`` for each cell once all its seeds have run.

    With ``jobs == 1`` the cells run in order in this process. With more, every
    ``(cell, seed)`` trial is a task for a pool of ``jobs`` spawned worker processes,
    the costliest first; a cell is yielded as soon as its last trial is back, so cells
    may come out of order. Trials are deterministic in their seeds, so the records do
    not depend on ``jobs``. The workers are this process's own children running this
    package's code, so the pickled trials they send back never leave the machine.

    Raises:
        ValueError: ``jobs`` is below 1.
    """
    if jobs < 1:
        raise ValueError(f"'jobs' must be at least 1, not {jobs}")
    if jobs == 1:
        for i, cell in enumerate(cells):
            yield i, [run(cell, grid, seed) for seed in grid.seeds]
        return
    tasks = sorted(
        ((i, s) for i in range(len(cells)) for s in range(len(grid.seeds))),
        key=lambda t: -_cost(cells[t[0]]),
    )
    done: dict[int, dict[int, Trial | Skipped]] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_one_thread) as pool:
        pending: dict[Future[Trial | Skipped], tuple[int, int]] = {
            pool.submit(run, cells[i], grid, grid.seeds[s]): (i, s) for i, s in tasks
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, s = pending.pop(future)
                    done.setdefault(i, {})[s] = future.result()
                    if len(done[i]) == len(grid.seeds):
                        trials = done.pop(i)
                        yield i, [trials[n] for n in range(len(grid.seeds))]
        finally:
            for future in pending:
                future.cancel()
