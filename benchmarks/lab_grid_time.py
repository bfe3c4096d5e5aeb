"""Wall time of a lab grid, extrapolated from one seed of a sample of its cells.

For every (dataset, K) of the grid the sample holds the cells of one partition (one per
local epochs and cycles), each run for one partition seed in this process with one torch
thread. A (dataset, K) group's total is its sampled seconds per seed, scaled to all its
cells and all the grid's seeds; the partition's skew changes the sites' sizes, not the
data trained on per cycle, so the sampled partition stands for the others. With
``--jobs N`` the same sample then runs through ``baton lab``'s worker pool (``N``
processes, the costliest trials first) and the ratio of the two wall times scales the
serial estimate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections import defaultdict

import torch

from sim.lab.grid import GRIDS, Cell, Grid, run_trial
from sim.lab.parallel import trials_by_cell


def _sample(grid: Grid, partition: str) -> list[Cell]:
    cells = [grid.effective(c) for c in grid.cells]
    sample = [c for c in cells if c.partition_label == partition]
    if not sample:
        known = sorted({c.partition_label for c in cells})
        raise SystemExit(f"grid {grid.name!r} has no partition {partition!r}; known: {known}")
    return sample


def main() -> None:
    """Prints one row per (dataset, K), the serial total and, with ``--jobs``, the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", default="full", choices=sorted(GRIDS))
    parser.add_argument("--partition", default="dirichlet-0.5")
    parser.add_argument("--seed", type=int, default=0, help="the partition seed timed")
    parser.add_argument("--jobs", type=int, default=1, help="also time a pool of this many")
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = GRIDS[args.grid]
    sample = _sample(grid, args.partition)
    cells_per_group: dict[tuple[str, int], int] = defaultdict(int)
    for cell in grid.cells:
        cells_per_group[(cell.dataset, cell.k)] += 1

    # The first trial of a process pays one-off imports (torch's optimizers); not timed.
    run_trial(
        dataclasses.replace(min(sample, key=lambda c: c.k), local_epochs=1, cycles=1), grid, 0
    )
    seconds: dict[tuple[str, int], float] = defaultdict(float)
    sampled: dict[tuple[str, int], int] = defaultdict(int)
    serial_started = time.perf_counter()
    for cell in sample:
        started = time.perf_counter()
        run_trial(cell, grid, args.seed)
        seconds[(cell.dataset, cell.k)] += time.perf_counter() - started
        sampled[(cell.dataset, cell.k)] += 1
    serial_wall = time.perf_counter() - serial_started

    seeds = len(grid.seeds)
    print(
        f"grid {grid.name!r}: {len(grid.cells)} cells x {seeds} seeds x "
        f"{grid.repetitions} repetitions; sample: partition {args.partition}, seed "
        f"{args.seed}, 1 torch thread, serial; {os.cpu_count()} CPUs, 1-min load average "
        f"with this run {os.getloadavg()[0]:.2f}"
    )
    print("| dataset | K | sampled cells | s per seed (sampled cells) | cells | extrapolated s |")
    print("|---|---|---|---|---|---|")
    total = 0.0
    for (dataset, k), spent in sorted(seconds.items()):
        n_cells = cells_per_group[(dataset, k)]
        estimate = spent / sampled[(dataset, k)] * n_cells * seeds
        total += estimate
        print(
            f"| {dataset} | {k} | {sampled[(dataset, k)]} | {spent:.1f} | {n_cells} "
            f"| {estimate:.0f} |"
        )
    print(f"| all | | {len(sample)} | {serial_wall:.1f} | {len(grid.cells)} | {total:.0f} |")
    print(f"extrapolated full run, serial: {total:.0f} s = {total / 60:.1f} min")
    if args.jobs > 1:
        one_seed = dataclasses.replace(grid, seeds=(args.seed,))
        started = time.perf_counter()
        for _ in trials_by_cell(sample, one_seed, run_trial, jobs=args.jobs):
            pass
        pooled_wall = time.perf_counter() - started
        print(f"load average after the pool: {os.getloadavg()[0]:.2f}")
        speedup = serial_wall / pooled_wall
        print("| mode | sample wall s | speed-up | extrapolated s |")
        print("|---|---|---|---|")
        print(f"| serial | {serial_wall:.1f} | 1.00x | {total:.0f} |")
        print(
            f"| --jobs {args.jobs} | {pooled_wall:.1f} | {speedup:.2f}x | {total / speedup:.0f} |"
        )
        print(
            f"extrapolated full run, --jobs {args.jobs}: {total / speedup:.0f} s = "
            f"{total / speedup / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
