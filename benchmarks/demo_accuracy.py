"""Final test accuracy of the demo's plan across partition seeds, in process (no transport).

The multi-process demo computes exactly what this simulator computes for the same plan,
data and order (tests/e2e/test_multiprocess_run.py holds it to that), so this measures the
demo's accuracy target over many partitions in seconds. Run: python benchmarks/demo_accuracy.py
"""

from __future__ import annotations

import argparse
import time

import torch

from baton.plan import parse_plan
from ordering import OrderingContext, make_strategy
from sim.demo import DemoOptions, demo_plan_toml
from sim.simulate import simulate_sequential, train_centralized
from sim.tasks import Partition, make_federation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.92)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sites = [f"hospital-{i}" for i in range(1, 5)]
    rows = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        opts = DemoOptions(seed=seed)
        plan = parse_plan(demo_plan_toml(opts, sites))
        fed = make_federation(
            "breast_cancer", sites, Partition(kind="dirichlet", alpha=opts.alpha), seed=seed
        )
        strategy = make_strategy(plan.ordering.strategy, plan.ordering.options)
        orders = [
            strategy.cycle_order(OrderingContext(sites=tuple(sites), cycle=c, seed=seed))
            for c in range(plan.run.cycles)
        ]
        seq = simulate_sequential(plan, fed, orders).test_metrics["accuracy"]
        central = train_centralized(plan, fed)["accuracy"]
        rows.append((seed, seq, central))
    print(f"{'seed':>4}  {'sequential':>10}  {'centralized':>11}  {'ratio':>6}")
    for seed, seq, central in rows:
        print(f"{seed:>4}  {seq:>10.4f}  {central:>11.4f}  {seq / central:>6.3f}")
    seqs = [r[1] for r in rows]
    hits = sum(s >= args.target for s in seqs)
    print(
        f"mean {sum(seqs) / len(seqs):.4f}  min {min(seqs):.4f}  "
        f">= {args.target}: {hits}/{len(seqs)}  ({time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
