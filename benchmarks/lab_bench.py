"""Orders evaluated per second: the lab's batched trainer against one-by-one simulation."""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from sim.lab.batched import train_orders_batched
from sim.lab.grid import REMEDIES
from sim.simulate import simulate_sequential
from sim.tasks import Partition, make_federation


def main() -> None:
    """Prints one table row per (K, cycles): orders/s batched, one by one, and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sequential-orders", type=int, default=12)
    parser.add_argument(
        "--remedies", action="store_true", help="turn on the *-remedies grids' remedies"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    remedies = dict(REMEDIES) if args.remedies else {}
    print(
        f"{args.dataset}, MLP [32], SGD, {args.epochs} local epochs, 1 torch thread, "
        f"remedies: {remedies or 'none'}"
    )
    print("| K | cycles | orders | batched orders/s | one-by-one orders/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for k, cycles in ((3, 1), (5, 1), (5, 3)):
        sites = tuple(f"site-{i}" for i in range(k))
        fed = make_federation(args.dataset, sites, Partition(kind="dirichlet", alpha=0.5), seed=0)
        plan = RunPlan(
            run=RunSection(name="bench", sites=sites, cycles=cycles, seed=0),
            model=ModelSection(name="mlp", args={"hidden": [32]}),
            task=TaskSection(dataset=args.dataset),
            training=TrainingSection(local_epochs=args.epochs, logit_adjustment=False, **remedies),
        )
        orders = list(itertools.permutations(sites))
        started = time.perf_counter()
        train_orders_batched(plan, fed, orders)
        batched = len(orders) / (time.perf_counter() - started)
        some = orders[: args.sequential_orders]
        started = time.perf_counter()
        for order in some:
            simulate_sequential(plan, fed, [order] * cycles)
        single = len(some) / (time.perf_counter() - started)
        print(
            f"| {k} | {cycles} | {len(orders)} | {batched:.1f} | {single:.1f} "
            f"| {batched / single:.1f}x |"
        )


if __name__ == "__main__":
    main()
