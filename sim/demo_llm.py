"""``baton demo --task llm``: department language models fine-tuned across department sites.

A throwaway PKI, a coordinator and one site process per department on loopback; each
department holds synthetic notes (:mod:`sim.llm.corpora`) and its own copy of a small base
model made here (:mod:`sim.llm.base`). The study owner signs a plan that pins the base by
hash and fine-tunes LoRA adapters department after department; only the adapters travel.
The fetched adapters are then scored on every department's validation notes next to the
base and next to pooled (centralized) LoRA fine-tuning with the same compute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from baton.errors import ConfigError
from baton.ml.codec import load_state_file
from baton.plan import parse_plan
from baton.v1 import admin_pb2
from sim.demo import demo_workdir, run_and_fetch
from sim.llm.base import cached_base
from sim.llm.corpora import DEPARTMENTS
from sim.llm.federation import (
    LMRecipe,
    full_model_bytes,
    lm_plan_toml,
    provision_departments,
    read_departments,
    score_departments,
)

POOLED_MARGIN = 1.5
"""The stated margin: the final model's mean perplexity over departments is at most this
many times pooled fine-tuning's (sequential training forgets some of the earlier
departments; pooled training sees them all at every step)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LLMDemoOptions:
    """What ``baton demo --task llm`` runs."""

    sites: int = 4
    """Departments (the first ``sites`` of :data:`~sim.llm.corpora.DEPARTMENTS`)."""
    cycles: int = 2
    """Passes over all departments."""
    seed: int = 0
    """Seed of the base model, the notes and the adapters."""
    workdir: Path | None = None
    """Keep everything here (PKI, state, site directories, logs); a temp dir otherwise."""
    report: Path | None = None
    """Write the JSON report here."""

    def __post_init__(self) -> None:
        if not 1 <= self.sites <= len(DEPARTMENTS):
            raise ConfigError(f"--sites must be between 1 and {len(DEPARTMENTS)} with --task llm")
        if not 1 <= self.cycles <= 20:
            raise ConfigError("--cycles must be between 1 and 20")


def run_llm_demo(opts: LLMDemoOptions, console: Console) -> dict[str, Any]:
    """Runs the demo and returns its report; raises BatonError on any failure."""
    started = time.monotonic()
    departments = list(DEPARTMENTS[: opts.sites])
    recipe = LMRecipe()
    with demo_workdir(opts.workdir, "baton-demo-llm-", console) as root:
        console.print(
            f"[bold]Baton demo[/] (department LLM): {len(departments)} departments, "
            f"{opts.cycles} cycles, LoRA rank {recipe.rank} on "
            f"{', '.join(recipe.target_modules)}; all notes are synthetic"
        )
        base = cached_base(seed=opts.seed)
        layout, pin = provision_departments(
            root, departments, base=base, seed=opts.seed, recipe=recipe
        )
        console.print(f"base checkpoint {pin[:19]}... copied to every department")
        plan_toml = lm_plan_toml(
            departments, pin=pin, cycles=opts.cycles, seed=opts.seed, recipe=recipe
        )
        plan = parse_plan(plan_toml)
        final, result_path = run_and_fetch(layout, departments, plan_toml, console, _perplexity)
        console.print(
            f"result fetched after {time.monotonic() - started:.0f} s; scoring base, result "
            "and pooled LoRA fine-tuning (same compute) in this process"
        )
        # One thread, as each site trains: two threads on a busy machine only wait on
        # each other, and one keeps the scores the same on any machine.
        torch.set_num_threads(1)
        deps = read_departments(layout, departments)
        scores = score_departments(deps, plan, load_state_file(result_path))
        report = _report(final, scores, recipe, full_model_bytes(deps, plan), pin)
        report["seconds"] = round(time.monotonic() - started, 1)
        report["workdir"] = str(root) if opts.workdir is not None else None
        _print(console, report)
        if opts.report is not None:
            try:
                opts.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                msg = f"{opts.report}: cannot write the report ({exc.strerror})"
                raise ConfigError(msg) from None
            console.print(f"report written to {opts.report}")
        return report


def _perplexity(m: Mapping[str, float]) -> str:
    return (
        f"val perplexity {m.get('before_perplexity', float('nan')):8.1f} -> "
        f"{m.get('after_perplexity', float('nan')):6.1f}"
    )


def _report(
    run: admin_pb2.Run,
    scores: dict[str, dict[str, float]],
    recipe: LMRecipe,
    full_bytes: int,
    pin: str,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for department, s in scores.items():
        hops = [h for h in run.hops if h.site_id == department]
        # Windows of `context` tokens, each seen `local_epochs` times per hop.
        tokens = sum(h.num_examples for h in hops) * recipe.context * recipe.local_epochs
        seconds = sum(h.train_seconds for h in hops)
        rows.append(
            {
                "department": department,
                "base_perplexity": round(s["base"], 3),
                "final_perplexity": round(s["final"], 3),
                "pooled_perplexity": round(s["pooled"], 3),
                "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
            }
        )
    hop_bytes = [h.output.size for h in run.hops if h.HasField("output")]
    final_mean = sum(r["final_perplexity"] for r in rows) / len(rows)
    pooled_mean = sum(r["pooled_perplexity"] for r in rows) / len(rows)
    per_hop = max(hop_bytes) if hop_bytes else 0
    return {
        "run_id": run.run_id,
        "base_sha256": pin,
        "cycles": run.cycles,
        "order": [h.site_id for h in run.hops],
        "departments": rows,
        "bytes_per_hop": per_hop,
        "full_model_bytes": full_bytes,
        "hop_share_of_full_model": round(per_hop / full_bytes, 4),
        "mean_final_perplexity": round(final_mean, 3),
        "mean_pooled_perplexity": round(pooled_mean, 3),
        "pooled_margin": POOLED_MARGIN,
        "within_pooled_margin": final_mean <= POOLED_MARGIN * pooled_mean,
        "below_base_everywhere": all(r["final_perplexity"] < r["base_perplexity"] for r in rows),
    }


def _print(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="Validation perplexity per department (lower is better)")
    for column in ("department", "base", "final (Baton)", "pooled", "train tokens/s"):
        table.add_column(column, justify="left" if column == "department" else "right")
    for r in report["departments"]:
        table.add_row(
            r["department"],
            f"{r['base_perplexity']:.1f}",
            f"{r['final_perplexity']:.1f}",
            f"{r['pooled_perplexity']:.1f}",
            f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] is not None else "-",
        )
    console.print(table)
    ok = "yes" if report["within_pooled_margin"] else "NO"
    console.print(
        f"mean final perplexity {report['mean_final_perplexity']:.1f} vs pooled "
        f"{report['mean_pooled_perplexity']:.1f} (margin x{POOLED_MARGIN}: {ok}); "
        f"below base on every department: {'yes' if report['below_base_everywhere'] else 'NO'}"
    )
    console.print(
        f"bytes per hop {report['bytes_per_hop']:,} (sealed adapters) vs full model "
        f"{report['full_model_bytes']:,}: {100 * report['hop_share_of_full_model']:.1f}%"
    )
    console.print(f"finished in {report['seconds']:.0f} s")
