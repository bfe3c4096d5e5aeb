"""Tests for the lab's worker processes and the acceptance grid."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sim.lab.grid import GRIDS, run_grid, run_trial
from sim.lab.parallel import trials_by_cell
from sim.lab.report import write_outputs

TIMED = ("decide_seconds", "extra_train_seconds")
"""Record fields that hold measured wall-clock time, so differ between runs."""


def _untimed(records: list[dict[str, Any]]) -> str:
    """The records without timings, as JSON text (so that NaN equals NaN)."""
    return json.dumps([{k: v for k, v in r.items() if k not in TIMED} for r in records])


def test_worker_processes_give_the_serial_records_in_grid_order() -> None:
    smoke = GRIDS["smoke"]
    grid = dataclasses.replace(
        smoke,
        cells=(smoke.cells[0], dataclasses.replace(smoke.cells[0], k=2)),
        seeds=(0, 1),
        strategies=tuple(s for s in smoke.strategies if s[0] in {"fixed", "random", "path:max"}),
    )
    serial, _, _ = run_grid(grid, jobs=1)
    lines: list[str] = []
    parallel, _, _ = run_grid(grid, lines.append, jobs=2)
    assert _untimed(parallel) == _untimed(serial)
    assert [r["k"] for r in parallel][:4] == [3, 3, 3, 3]
    assert {r["strategy"] for r in serial} == {"fixed", "random", "path:max", "fedavg"}
    assert len(lines) == 2


def test_a_cell_that_cannot_be_partitioned_is_left_out_not_fatal(tmp_path: Path) -> None:
    smoke = GRIDS["smoke"]
    cell = smoke.cells[0]
    greedy = dataclasses.replace(
        cell, partition=dataclasses.replace(cell.partition, min_train_examples=100)
    )
    grid = dataclasses.replace(
        smoke,
        cells=(greedy, cell),
        strategies=tuple(s for s in smoke.strategies if s[0] == "fixed"),
    )
    records, _, left_out = run_grid(grid)
    assert {(r["k"], r["strategy"], r["skipped_seeds"]) for r in records} == {
        (3, "fixed", 0),
        (3, "fedavg", 0),
    }
    assert len(left_out) == 1
    assert left_out[0]["dataset"] == "wine"
    assert "cannot give each of 3 sites 100 training examples" in left_out[0]["reason"]
    write_outputs(tmp_path, records, {"cells_left_out": left_out})
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "Cells left out" in table
    assert "cannot give each of 3 sites 100 training examples" in table


def test_budget_rows_add_learned_with_more_probes_where_the_cell_is_small_enough() -> None:
    smoke = GRIDS["smoke"]
    grid = dataclasses.replace(
        smoke,
        cells=(smoke.cells[0], dataclasses.replace(smoke.cells[0], k=2)),
        strategies=tuple(s for s in smoke.strategies if s[0] == "learned"),
        budget_rows=(("learned:4/site", 4, 2),),
    )
    records, _, _ = run_grid(grid)
    runs = {(r["k"], r["strategy"]): r["extra_runs"] for r in records}
    assert runs == {
        (3, "learned"): 6,
        (3, "fedavg"): 0,
        (2, "learned"): 4,
        (2, "learned:4/site"): 8,
        (2, "fedavg"): 0,
    }


_POOL = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from sim.lab.parallel import _one_thread
ctx = multiprocessing.get_context("spawn")
pool = ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=_one_thread)
pids = {pool.submit(os.getpid).result() for _ in range(8)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux only")
def test_workers_end_when_the_lab_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _POOL], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) >= 1
        parent.kill()
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.1)
    assert not alive, f"workers {sorted(alive)} outlived the killed parent"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_jobs_below_one_is_refused() -> None:
    smoke = GRIDS["smoke"]
    with pytest.raises(ValueError, match="'jobs' must be at least 1"):
        next(trials_by_cell(smoke.cells, smoke, run_trial, jobs=0))


def test_acceptance_grid_holds_the_order_sensitive_cells() -> None:
    grid = GRIDS["acceptance"]
    cells = {
        (c.dataset, c.partition.kind, c.partition.alpha, c.local_epochs, c.cycles, c.k)
        for c in grid.cells
    }
    assert cells == {
        ("digits", "dirichlet", alpha, 5, cycles, k)
        for alpha in (0.1, 0.5)
        for cycles in (1, 3)
        for k in (3, 5, 7)
    }
    assert len(grid.cells) == len(cells)
    assert len(grid.seeds) >= 10
    assert grid.repetitions >= 4
    remedies = GRIDS["acceptance-remedies"]
    assert remedies.cells == grid.cells
    assert remedies.remedies
    assert remedies.transfer_factor > 1
