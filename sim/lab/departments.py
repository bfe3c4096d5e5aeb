"""Department sites and a plan for measuring "which department last" with ``baton lab --plan``.

Run ``python -m sim.lab.departments DIR`` to write, under ``DIR``, one data directory per
department (its synthetic notes and a copy of the project's small base model) and
``plan.toml`` (LoRA on that base, ranked by perplexity, lower is better); it prints the
``baton lab`` command that trains every order of the departments on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from baton.errors import ConfigError
from baton.ml.llm.base import BASE_DIR, base_hash
from sim.llm.base import MANIFEST, cached_base
from sim.llm.corpora import DEPARTMENTS, write_department
from sim.llm.federation import LMRecipe, lm_plan_toml

__all__ = ["LAB_RECIPE", "lab_command", "write_lab_departments"]

LAB_RECIPE = LMRecipe(train_docs=40, val_docs=12, context=32, local_epochs=1)
"""Smaller than the demo's notes: the lab trains every order, one run at a time."""


def write_lab_departments(
    root: Path,
    departments: Sequence[str] = DEPARTMENTS,
    *,
    seed: int = 0,
    cycles: int = 1,
    steps: int = 4,
    recipe: LMRecipe = LAB_RECIPE,
) -> tuple[Path, dict[str, Path]]:
    """Writes each department's data directory and the plan under ``root``.

    Args:
        root: Where ``plan.toml`` and ``sites/<department>/`` go.
        departments: The departments (``sim.llm.corpora.DEPARTMENTS`` names).
        seed: Seed of the base, the notes and the plan's run.
        cycles: The plan's cycles.
        steps: Local optimizer steps per hop (0: the recipe's local epochs).
        recipe: How much text each department holds and the plan's LoRA settings.

    Returns:
        The plan's path and each department's data directory.

    Raises:
        ConfigError: An unknown department, fewer than 2, or ``steps`` or ``cycles`` out
            of range.
    """
    unknown = [d for d in departments if d not in DEPARTMENTS]
    if unknown or len(set(departments)) < 2:
        raise ConfigError(
            f"give at least 2 distinct departments of {', '.join(DEPARTMENTS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    if steps < 0 or cycles < 1:
        raise ConfigError(f"steps must be at least 0 and cycles at least 1 ({steps}, {cycles})")
    base = cached_base(seed=seed)
    sites: dict[str, Path] = {}
    for department in departments:
        site = root / "sites" / department
        write_department(
            site,
            department,
            seed=seed,
            train_docs=recipe.train_docs,
            val_docs=recipe.val_docs,
            context=recipe.context,
        )
        if not (site / BASE_DIR).exists():
            shutil.copytree(base, site / BASE_DIR, ignore=shutil.ignore_patterns(MANIFEST))
        sites[department] = site
    pin = base_hash(sites[departments[0]] / BASE_DIR)
    plan = lm_plan_toml(departments, pin=pin, cycles=cycles, seed=seed, recipe=recipe)
    plan = plan.replace('name = "department-llm"', 'name = "department-llm-lab"')
    plan_path = root / "plan.toml"
    plan_path.write_text(plan + f"local_steps = {steps}\n", encoding="utf-8")
    return plan_path, sites


def lab_command(plan: Path, sites: dict[str, Path], out: Path, *, repetitions: int) -> list[str]:
    """The ``baton lab --plan`` command line for what :func:`write_lab_departments` wrote."""
    site_args = [f"--site={name}={path}" for name, path in sites.items()]
    return [
        "baton",
        "lab",
        "--plan",
        str(plan),
        *site_args,
        "--repetitions",
        str(repetitions),
        "--out",
        str(out),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim.lab.departments DIR``: writes the sites and plan, prints the command."""
    parser = argparse.ArgumentParser(prog="python -m sim.lab.departments", description=__doc__)
    parser.add_argument("root", type=Path, help="where plan.toml and sites/ are written")
    parser.add_argument("--departments", nargs="+", default=list(DEPARTMENTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per hop")
    parser.add_argument("--train-docs", type=int, default=LAB_RECIPE.train_docs)
    parser.add_argument("--repetitions", type=int, default=2, help="for the printed command")
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(LAB_RECIPE, train_docs=args.train_docs)
    try:
        plan, sites = write_lab_departments(
            args.root,
            args.departments,
            seed=args.seed,
            cycles=args.cycles,
            steps=args.steps,
            recipe=recipe,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(lab_command(plan, sites, args.root / "lab", repetitions=args.repetitions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
