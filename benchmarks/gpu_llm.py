"""GPU check of the language-model task: LoRA on a bf16 frozen base, LoRA on a float32
base and full fine-tuning, each one hop of the site's workers (bf16 autocast on CUDA).

Prints tokens/s and peak GPU memory per mode: the single-device plan runs in this process
(so its peak memory is measured here), then LoRA under a 1-GPU DDP with torchrun. The base
is ``--base DIR`` (any local Hugging Face causal-LM checkpoint), else a randomly initialized
Llama of about 200M parameters saved with ``save_pretrained`` (the demo's small base with
``--device cpu``, a dry run of the script itself). Not part of CI.

Run: python benchmarks/gpu_llm.py [--device cuda|cpu] [--steps N] [--base DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from baton.ml.codec import state_of
from baton.ml.llm.base import base_hash
from baton.ml.llm.model import HFCausalLM
from baton.ml.llm.task import build_lm
from site_node.parallel.job import Job, ModelSpec, TrainSpec
from site_node.parallel.launch import launch, prepare
from site_node.parallel.plans import ParallelPlan, PlanKind
from site_node.parallel.worker import run_worker

MODES: dict[str, dict[str, Any]] = {
    "lora bf16 base": {"mode": "lora", "base_dtype": "bfloat16"},
    "lora fp32 base": {"mode": "lora"},
    "full": {"mode": "full"},
}
"""The fine-tuning modes measured, as plan arguments (rank 16 adapters on q/k/v/o)."""


def _random_base(out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def _run(
    label: str, base: Path, kind: PlanKind, device: str, steps: int, context: int, root: Path
) -> dict[str, float]:
    args = {
        "base_sha256": base_hash(base),
        "rank": 16,
        "alpha": 32,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        **MODES[label],
    }
    model = build_lm(args, base, seed=0)
    assert isinstance(model, HFCausalLM)
    vocab = model.vocab
    draw = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (4096, context + 1), generator=draw)
    job = Job(
        model=ModelSpec(
            name="hf_causal_lm",
            args=args,
            num_features=context,
            num_classes=vocab,
            checkpoint=str(base),
        ),
        training=TrainSpec(optimizer="adamw", lr=1e-4, batch_size=16, steps=steps, seed=0),
        plan=ParallelPlan(kind=kind, dp=1, tp=1),
        workdir=str(root / f"{label.replace(' ', '-')}-{kind.value}"),
        device=device,
    )
    path = prepare(
        job, weights=state_of(model), x=tokens[:, :-1].contiguous(), y=tokens[:, 1:].contiguous()
    )
    del model
    started = time.perf_counter()
    peak = float("nan")
    if kind == PlanKind.SINGLE:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        run_worker(path, rank=0, world_size=1, init_method=None)
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        launch(path, starter="torchrun")
    wall = time.perf_counter() - started
    result = json.loads(job.result_path.read_text(encoding="utf-8"))
    samples_per_s = float(result["samples_per_s"])
    return {
        "tokens_per_s": samples_per_s * context,
        "peak_gib": peak,
        "final_loss": float(result["final_loss"]),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--base", type=Path, default=None, help="a local checkpoint directory")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu for a dry run")
    context = 512 if args.device == "cuda" else 32
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.base is not None:
            base = args.base
        elif args.device == "cuda":
            base = _random_base(root / "base")
        else:
            from sim.llm.base import cached_base

            base = cached_base(seed=0)
        if args.device == "cuda":
            print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
        runs = [(label, PlanKind.SINGLE) for label in MODES] + [("lora bf16 base", PlanKind.DDP)]
        rows = [
            (label, kind, _run(label, base, kind, args.device, args.steps, context, root))
            for label, kind in runs
        ]
    print(f"base {base} ({context} tokens a window, {args.steps} steps of 16 windows)")
    print(f"{'mode':<16} {'plan':<7} {'tokens/s':>10} {'peak GiB':>9} {'loss':>7} {'wall s':>7}")
    for label, kind, r in rows:
        print(
            f"{label:<16} {kind.value:<7} {r['tokens_per_s']:>10.0f} {r['peak_gib']:>9.2f} "
            f"{r['final_loss']:>7.3f} {r['wall_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
