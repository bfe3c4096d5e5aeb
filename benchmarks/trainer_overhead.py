"""Samples/s of the site trainer (``train_local``) against a bare torch loop, one process.

Both train the same MLP from the same weights on the same data with the same optimizer,
batch size and shuffles; runs alternate and the median of each is compared. Usage::

    python benchmarks/trainer_overhead.py [--repeats 15] [--examples 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baton.ml.codec import state_of
from baton.ml.data import Split
from baton.ml.models import build_model
from baton.ml.norm import fit_input_norm
from baton.ml.trainer import train_local
from baton.plan import TrainingSection


def _bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: TrainingSection, seed: int) -> int:
    """A hand-written loop doing the same math as ``train_local``; returns examples seen."""
    fit_input_norm(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    seen = 0
    for _ in range(t.local_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), t.batch_size):
            idx = order[start : start + t.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            opt.step()
            seen += len(idx)
    return seen


def main() -> None:
    """Runs the comparison and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, 32)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    split = Split(x=x, y=y)
    training = TrainingSection(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=128,
        local_epochs=2,
        logit_adjustment=False,
    )
    initial = state_of(
        build_model("mlp", {"hidden": [256, 256]}, num_features=32, num_classes=2, seed=0)
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rates: dict[str, list[float]] = {"train_local": [], "bare loop": []}
    # One untimed round first: the first call of each pays one-off costs (lazy imports,
    # allocator warm-up) that are not the loop's.
    for repeat in range(args.repeats + 1):
        for name in rates:
            model = build_model(
                "mlp", {"hidden": [256, 256]}, num_features=32, num_classes=2, seed=0
            )
            model.load_state_dict(initial)
            started = time.perf_counter()
            if name == "train_local":
                train_local(model, split, training, seed=1)
                seen = training.local_epochs * len(y)
            else:
                seen = _bare(model, xt, yt, training, seed=1)
            if repeat:
                rates[name].append(seen / (time.perf_counter() - started))
    print(
        f"threads={torch.get_num_threads()} examples={len(y)} batch={training.batch_size} "
        f"epochs={training.local_epochs} repeats={args.repeats}"
    )
    print(f"{'loop':<12} {'median samples/s':>17} {'min':>10} {'max':>10}")
    medians = {}
    for name, values in rates.items():
        medians[name] = statistics.median(values)
        print(f"{name:<12} {medians[name]:>17.0f} {min(values):>10.0f} {max(values):>10.0f}")
    print(f"ratio train_local / bare = {medians['train_local'] / medians['bare loop']:.3f}")


if __name__ == "__main__":
    main()
