"""``baton demo``, ``baton lab`` and ``baton simulate``: the simulations, added to the
``baton`` command through the ``baton.commands`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from baton import exit_codes
from baton.entry import fail


def register(app: typer.Typer) -> None:
    """Adds the ``demo``, ``lab`` and ``simulate`` commands to ``app``."""
    app.command(name="demo")(demo)
    app.command(name="lab")(lab)
    app.command(name="simulate")(simulate)


def demo(
    task: Annotated[
        str, typer.Option(help="tabular (a bundled table) or llm (department language models).")
    ] = "tabular",
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    cycles: Annotated[
        int | None, typer.Option(help="Passes over all hospitals (default 3; 2 with --task llm).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="breast_cancer, digits or wine.")] = "breast_cancer",
    alpha: Annotated[float, typer.Option(help="Dirichlet label-skew concentration.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for data split, model and order.")] = 0,
    strategy: Annotated[str, typer.Option(help="Ordering strategy.")] = "learned",
    workdir: Annotated[
        Path | None, typer.Option(help="Keep PKI, state, data and logs here.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
) -> None:
    """Run a real multi-site training on this machine: coordinator and sites as processes."""
    from baton.entry import configure_logging, exit_on_error
    from baton.errors import ConfigError, PkiError, ProcessExited, TransportError
    from sim.demo import DemoOptions, run_demo

    configure_logging("WARNING")
    console = Console(highlight=False)
    codes = {
        ConfigError: exit_codes.CLI_CONFIG,
        PkiError: exit_codes.CLI_PKI,
        TransportError: exit_codes.CLI_UNREACHABLE,
        ProcessExited: exit_codes.CLI_DEMO_PROCESS,
    }
    with exit_on_error(codes, exit_codes.CLI_RUN_FAILED):
        if task == "llm":
            from sim.demo_llm import LLMDemoOptions, run_llm_demo

            llm = LLMDemoOptions(
                sites=sites, cycles=cycles or 2, seed=seed, workdir=workdir, report=report
            )
            run_llm_demo(llm, console)
            return
        if task != "tabular":
            raise ConfigError(f"unknown --task {task!r}; known: tabular, llm")
        try:
            opts = DemoOptions(
                sites=sites,
                cycles=cycles or 3,
                dataset=dataset,
                alpha=alpha,
                seed=seed,
                strategy=strategy,
                workdir=workdir,
                report=report,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        run_demo(opts, console)


def lab(
    out: Annotated[Path, typer.Option(help="Directory for results.json, results.md, the plots.")],
    grid: Annotated[
        str | None,
        typer.Option(
            help="smoke (the default), reduced, acceptance, full, or the same with -remedies."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Worker processes running trials (one torch thread each).")
    ] = 1,
    plan: Annotated[
        Path | None,
        typer.Option(help="Measure this run plan on the sites' own data (--site) instead."),
    ] = None,
    site: Annotated[
        list[str] | None,
        typer.Option(help="With --plan, NAME=DIR: a site of the plan and its data directory."),
    ] = None,
    test: Annotated[
        Path | None,
        typer.Option(
            help="With --plan, held-out data (a data directory or a CSV or Parquet file); "
            "without it runs are scored on the sites' validation splits."
        ),
    ] = None,
    repetitions: Annotated[
        int, typer.Option(min=1, help="With --plan, runs of every order (run seeds).")
    ] = 4,
    max_orders: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="With --plan, at most this many orders (drawn with the plan's seed); "
            "default: every order up to 6 sites, 720 drawn beyond.",
        ),
    ] = None,
) -> None:
    """Measure how much the order of sites matters and how well each strategy picks it."""
    import torch

    from sim.lab.grid import GRIDS, run_grid
    from sim.lab.report import write_outputs

    if plan is not None and grid is not None:
        fail("--grid and --plan are mutually exclusive: give one", exit_codes.CLI_CONFIG)
    if plan is None and (site or test is not None or max_orders is not None):
        fail("--site, --test and --max-orders need --plan", exit_codes.CLI_CONFIG)
    console = Console(highlight=False, stderr=True)
    torch.set_num_threads(1)
    if plan is not None:
        _lab_plan(
            plan, site or [], test, repetitions, out, console, jobs=jobs, max_orders=max_orders
        )
        return
    grid = grid or "smoke"
    if grid not in GRIDS:
        fail(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}", exit_codes.CLI_CONFIG)
    chosen = GRIDS[grid]
    records, seconds, left_out = run_grid(chosen, console.print, jobs=jobs)
    meta = {
        "grid": chosen.name,
        "seconds": seconds,
        "seeds": list(chosen.seeds),
        "repetitions": chosen.repetitions,
        "torch_threads": 1,
        "jobs": jobs,
        "plot": "percentiles.png (matplotlib, Agg) and percentiles.svg",
        "cells_left_out": left_out,
    }
    for cell in left_out:
        console.print(
            f"left out {cell['dataset']} {cell['partition']} K={cell['k']} "
            f"epochs={cell['local_epochs']} cycles={cell['cycles']}: {cell['reason']}"
        )
    for path in write_outputs(out, records, meta):
        console.print(f"wrote {path}")
    console.print(f"grid {chosen.name!r}: {len(chosen.cells)} cells in {seconds:.1f} s")


def _lab_plan(
    plan_path: Path,
    site: list[str],
    test: Path | None,
    repetitions: int,
    out: Path,
    console: Console,
    *,
    jobs: int,
    max_orders: int | None,
) -> None:
    """``baton lab --plan``: one cell of every order of the sites' own data."""
    from baton.entry import exit_on_error
    from baton.errors import ConfigError, DataError, ModelError
    from baton.plan import load_plan
    from sim.lab.metric import direction
    from sim.lab.plan_cell import run_plan_cell
    from sim.lab.report import write_outputs
    from sim.own_data import parse_site_options

    codes = {ConfigError: exit_codes.CLI_CONFIG, DataError: exit_codes.CLI_DATA}
    with exit_on_error({**codes, ModelError: exit_codes.CLI_MODEL}, exit_codes.CLI_ERROR):
        run_plan = load_plan(plan_path)
        site_dirs = parse_site_options(site)
        if jobs > 1:
            console.print("--jobs: a plan's cell is one trial, run in this process")
        console.print(
            f"plan {run_plan.run.name!r}: the orders of {len(run_plan.run.sites)} sites, "
            f"{repetitions} repetitions, {run_plan.run.cycles} cycles, ranked by "
            f"{run_plan.task.metric} ({direction(run_plan.task.higher_is_better)})"
        )
        records, meta = run_plan_cell(
            run_plan,
            site_dirs,
            test=test,
            repetitions=repetitions,
            max_orders=max_orders,
            progress=console.print,
        )
        for path in write_outputs(out, records, meta):
            console.print(f"wrote {path}")
    _print_plan_cell(records, meta)
    console.print(f"plan {run_plan.run.name!r}: {meta['seconds']:.1f} s")


def _print_plan_cell(records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The order effect, each strategy's place among the orders, and the scores by last site."""
    from rich.table import Table

    metric = meta["metric"]
    first = records[0]
    gap = first["gap_best_worst"]
    gap_text = f"{100 * gap:.1f} pts" if metric == "accuracy" else f"{gap:.4g} {metric}"
    stdout = Console(highlight=False)
    stdout.print(
        f"{meta['orders']} orders, order/noise ratio {first['order_noise_ratio']:.2f}, "
        f"best-worst gap {gap_text}; scored on {meta['scored_on']}"
    )
    table = Table()
    for column in ("strategy", "percentile", metric, "best order"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for r in records:
        table.add_row(
            r["strategy"],
            f"{r['percentile_mean']:.1f}",
            f"{r['accuracy_mean']:.4f}",
            f"{100 * r['best_order_rate']:.0f}%",
        )
    stdout.print(table)
    last = Table(title=f"{metric} by the site trained last (mean over the orders ending there)")
    for column in ("last site", "orders", "mean", "lowest", "highest"):
        last.add_column(column, justify="left" if column == "last site" else "right")
    for row in meta["by_last_site"]:
        last.add_row(
            row["site"],
            str(row["orders"]),
            f"{row['mean']:.4f}",
            f"{row['min']:.4f}",
            f"{row['max']:.4f}",
        )
    stdout.print(last)


def simulate(
    plan: Annotated[Path, typer.Argument(help="The run plan (TOML).")],
    site: Annotated[
        list[str],
        typer.Option(help="NAME=DIR: a site of the plan and its data directory; one per site."),
    ],
    test: Annotated[
        Path | None,
        typer.Option(
            help="Held-out data: a data directory with the sites' schema (its val split) "
            "or a CSV or Parquet file."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
) -> None:
    """Train a plan in this process on the sites' own data directories, as a real run would."""
    import json

    import torch

    from baton.entry import configure_logging, exit_on_error
    from baton.errors import ConfigError, DataError, ModelError
    from baton.plan import load_plan
    from sim.own_data import parse_site_options, report_of, score_rows, simulate_sites
    from sim.summary import print_summary

    configure_logging("WARNING")
    console = Console(highlight=False)
    # One thread, as the local federation's sites train: the same weights on any machine.
    torch.set_num_threads(1)
    codes = {ConfigError: exit_codes.CLI_CONFIG, DataError: exit_codes.CLI_DATA}
    with exit_on_error({**codes, ModelError: exit_codes.CLI_MODEL}, exit_codes.CLI_ERROR):
        run_plan = load_plan(plan)
        site_dirs = parse_site_options(site)
        console.print(
            f"[bold]Simulating[/] {run_plan.run.name!r}: {len(run_plan.run.sites)} sites, "
            f"{run_plan.run.cycles} cycles, ordering '{run_plan.ordering.strategy}'"
        )
        result = simulate_sites(run_plan, site_dirs, test=test)
        summary = report_of(run_plan, result)
        print_summary(
            console,
            summary,
            title="Final model",
            scores=score_rows(summary),
            label="scored on",
            metric=run_plan.task.metric,
        )
        if report is not None:
            try:
                report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                raise DataError(f"{report}: cannot write the report ({exc.strerror})") from None
            console.print(f"report written to {report}")
