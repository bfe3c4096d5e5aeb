"""How reproducibly can any strategy find the best order? The acceptance cells' ceilings.

The lab scores a pick on repetitions 0-3 (shared run seeds across orders) and calls the
order with the best 4-repetition mean "the best". This benchmark trains every order on
``--reps`` run seeds, keeps 0-3 for scoring as the lab does, and picks each order on the
fresh seeds beyond them, by test accuracy (no strategy may see it: a ceiling) and by the
sites' pooled validation accuracy (what probes measure), on 1, 4 and all fresh seeds per
order (disjoint windows, averaged). It prints, per cell, the best-order rate and the
mean percentile of such picks, next to the lab's leave-one-out oracle.

With ``--budgets`` it also replays the ``learned`` strategy with that many probe runs per
site, answered from the fresh seeds (4 draws of them per partition seed), with its
default surrogate and with the ridge alone: the percentile its cost buys.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from ordering import LearnedOrder
from sim.lab.grid import GRIDS, lab_plan
from sim.lab.oracle import (
    OrderScores,
    candidate_orders,
    evaluate_orders,
    leave_one_out_oracle,
    percentile_of,
)
from sim.lab.runner import context_for, gather_probes, published_profiles
from sim.tasks import make_federation

SCORING_REPS = 4
REPLAY_DRAWS = (0, 5, 10, 15)
"""Offsets into the fresh seeds: each replay draw reads its probes from there on."""


def picks_on_fresh_seeds(
    score: np.ndarray[Any, Any], signal: np.ndarray[Any, Any], window: int
) -> tuple[float, float]:
    """Mean percentile and best-order rate of picking by ``signal`` averaged over each
    disjoint window of ``window`` fresh seeds; ``score`` is the ``[order, rep]`` test
    table the picks are scored on."""
    means = score.mean(axis=1)
    best = int(means.argmax())
    hits, pcts = [], []
    for start in range(0, signal.shape[1] - window + 1, window):
        pick = int(signal[:, start : start + window].mean(axis=1).argmax())
        hits.append(pick == best)
        pcts.append(percentile_of(float(means[pick]), means))
    return float(np.mean(pcts)), float(np.mean(hits))


def replay_learned(
    strategy: LearnedOrder,
    scores: OrderScores,
    sites: tuple[str, ...],
    profiles: Any,
    budget: int,
    seed: int,
) -> tuple[float, float]:
    """Mean percentile and best-order rate of ``strategy`` with ``budget`` probes whose
    pooled validation metrics come from the fresh seeds, over :data:`REPLAY_DRAWS`."""
    means = scores.test[:, :SCORING_REPS].mean(axis=1)
    fresh = scores.test.shape[1] - SCORING_REPS
    pcts, hits = [], []
    for draw, offset in enumerate(REPLAY_DRAWS):

        def measure(order: tuple[str, ...], rep: int, offset: int = offset) -> dict[str, float]:
            row = scores.index(order)
            assert row is not None  # every order of up to 6 sites is in the table
            col = SCORING_REPS + (offset + rep) % fresh
            return {
                "accuracy": float(scores.val[row, col]),
                "loss": float(scores.val_loss[row, col]),
            }

        run_seed = seed * 10 + draw
        probes = gather_probes(
            strategy, sites, profiles, seed=run_seed, budget=budget, measure=measure
        )
        ctx = context_for(sites, profiles, (), cycle=0, seed=run_seed, probes=probes)
        row = scores.index(strategy.cycle_order(ctx))
        assert row is not None
        pcts.append(percentile_of(float(means[row]), means))
        hits.append(row == int(means.argmax()))
    return float(sum(pcts) / len(pcts)), float(sum(hits) / len(hits))


def print_replay(cell: str, rows: dict[str, list[list[tuple[float, float]]]]) -> None:
    """One line per surrogate: mean percentile (best-order rate) per budget."""
    for name, values in rows.items():
        arr = np.array(values)  # [seed, budget, (pct, rate)]
        cols = [
            f"{arr[:, b, 0].mean():.1f} ({100 * arr[:, b, 1].mean():.0f}%)"
            for b in range(arr.shape[1])
        ]
        print(f"| {cell} | {name} | " + " | ".join(cols) + " |", flush=True)


def main() -> None:
    """Prints one row per acceptance cell (K in ``--ks``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--reps", type=int, default=24, help="run seeds per order")
    parser.add_argument("--seeds", type=int, default=10, help="partition seeds per cell")
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=[],
        help="probe runs per site to replay the learned strategy with (e.g. 2 4 8 16 24)",
    )
    args = parser.parse_args()
    if args.reps < SCORING_REPS + 4:
        parser.error(f"--reps must be at least {SCORING_REPS + 4}")
    torch.set_num_threads(1)
    grid = GRIDS["acceptance"]
    windows = (1, 4, args.reps - SCORING_REPS)
    print(
        f"digits, 5 local epochs; scoring on run seeds 0-{SCORING_REPS - 1}, picks on "
        f"{args.reps - SCORING_REPS} fresh seeds, {args.seeds} partition seeds"
    )
    print("best-order rate / mean percentile of the pick")
    names = [f"{s} x{w}" for s in ("test", "val") for w in windows]
    print("| cell | leave-one-out (lab) | " + " | ".join(names) + " | seconds |")
    print("|---" * (len(names) + 3) + "|")
    replays: list[tuple[str, dict[str, list[list[tuple[float, float]]]]]] = []
    for cell in grid.cells:
        if cell.k not in args.ks:
            continue
        started = time.perf_counter()
        label = f"K={cell.k} {cell.partition_label} c={cell.cycles}"
        sites = tuple(f"site-{i}" for i in range(cell.k))
        rows: list[list[tuple[float, float]]] = []
        budgets = [b * cell.k for b in args.budgets]
        replayed: dict[str, list[list[tuple[float, float]]]] = {
            "learned": [],
            "learned, ridge only": [],
        }
        for seed in range(args.seeds):
            fed = make_federation(cell.dataset, sites, cell.partition, seed=seed)
            plan = lab_plan(cell, grid, sites, fed)
            orders = candidate_orders(sites, seed=seed)
            scores = evaluate_orders(plan, fed, orders, tuple(range(args.reps)))
            score = scores.test[:, :SCORING_REPS]
            row = [leave_one_out_oracle(score)]
            for table in (scores.test, scores.val):
                fresh = table[:, SCORING_REPS:]
                row += [picks_on_fresh_seeds(score, fresh, w) for w in windows]
            rows.append(row)
            profiles = published_profiles(fed)
            for name, strategy in zip(
                replayed, (LearnedOrder(), LearnedOrder(surrogate="ridge")), strict=True
            ):
                replayed[name].append(
                    [replay_learned(strategy, scores, sites, profiles, b, seed) for b in budgets]
                )
        arr = np.array(rows)  # [seed, column, (pct, rate)]
        cols = [
            f"{100 * arr[:, c, 1].mean():.0f}% / {arr[:, c, 0].mean():.1f}"
            for c in range(arr.shape[1])
        ]
        print(
            f"| {label} | " + " | ".join(cols) + f" | {time.perf_counter() - started:.0f} |",
            flush=True,
        )
        if budgets:
            replays.append((label, replayed))
    if replays:
        print(
            "\nlearned, replayed: mean percentile (best-order rate) with this many probe "
            "runs per site"
        )
        print("| cell | surrogate | " + " | ".join(str(b) for b in args.budgets) + " |")
        print("|---" * (len(args.budgets) + 2) + "|")
        for cell_name, replayed in replays:
            print_replay(cell_name, replayed)


if __name__ == "__main__":
    main()
