"""GPU check of the site trainer: the single-device plan and a 1-GPU DDP run under torchrun.

Trains a causal-LM from ``baton.ml.models_lm`` with bf16 autocast (NCCL on CUDA) and prints
samples/s, tokens/s and model FLOPs utilization (MFU, from 6 x parameters x tokens/s
against the device's dense bf16 peak). Not part of CI. On a machine without a GPU,
``--device cpu`` runs the same two jobs on gloo as a dry run of the script itself.

Run: python benchmarks/gpu_check.py [--device cuda|cpu] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from baton.ml import models_lm
from baton.ml.codec import state_of
from site_node.parallel import families
from site_node.parallel.job import Job, ModelSpec, TrainSpec
from site_node.parallel.launch import launch, prepare
from site_node.parallel.plans import ParallelPlan, PlanKind

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
"""Dense bf16 peak by product name; MFU is left out for devices not listed."""


def _peak(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _run(kind: PlanKind, spec: ModelSpec, device: str, steps: int, root: Path) -> dict[str, float]:
    model = families.build(spec, seed=0)
    tokens = models_lm.synthetic_tokens(
        n=4096, seq_len=spec.num_features, vocab=spec.num_classes, seed=0
    )
    job = Job(
        model=spec,
        training=TrainSpec(optimizer="adamw", lr=3e-4, batch_size=64, steps=steps, seed=0),
        plan=ParallelPlan(kind=kind, dp=1, tp=1),
        workdir=str(root / kind.value),
        device=device,
    )
    path = prepare(
        job,
        weights=state_of(model),
        x=tokens[:, :-1].contiguous(),
        y=tokens[:, 1:].contiguous(),
    )
    started = time.perf_counter()
    launch(path, starter="torchrun")
    wall = time.perf_counter() - started
    result = json.loads(job.result_path.read_text())
    params = sum(p.numel() for p in model.parameters())
    samples_per_s = float(result["samples_per_s"])
    tokens_per_s = samples_per_s * spec.num_features
    peak = _peak(device)
    return {
        "samples_per_s": samples_per_s,
        "tokens_per_s": tokens_per_s,
        "mfu": 6 * params * tokens_per_s / peak if peak else float("nan"),
        "wall_s": wall,
        "params": float(params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu for a dry run")
    big = args.device == "cuda"
    spec = ModelSpec(
        name=models_lm.FAMILY,
        args={"dim": 1024, "layers": 8, "heads": 16} if big else {"dim": 64, "layers": 2},
        num_features=512 if big else 32,
        num_classes=32000 if big else 128,
    )
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            (label, _run(kind, spec, args.device, args.steps, Path(tmp)))
            for label, kind in (("single", PlanKind.SINGLE), ("ddp x1", PlanKind.DDP))
        ]
    print(f"{'plan':<8} {'params':>10} {'samples/s':>10} {'tokens/s':>11} {'MFU':>6} {'wall s':>7}")
    for label, r in rows:
        print(
            f"{label:<8} {r['params']:>10.3g} {r['samples_per_s']:>10.1f} "
            f"{r['tokens_per_s']:>11.0f} {r['mfu']:>6.1%} {r['wall_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
