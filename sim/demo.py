"""``baton demo``: a real multi-site run on one machine, start to finish, with a report.

A throwaway PKI, a coordinator and N site daemons as separate processes on loopback,
scikit-learn's bundled breast_cancer data split non-IID across the sites, sequential
training for several cycles, then the final model evaluated on a held-out test set next to
centralized training of the same model on the pooled data.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from baton.errors import BatonError
from baton.ml.codec import load_state_file
from baton.plan import RunPlan, parse_plan
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import LocalFederationLayout, provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.simulate import train_centralized
from sim.summary import print_summary
from sim.tasks import Federation, Partition

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoOptions:
    """What ``baton demo`` runs."""

    sites: int = 4
    """Number of hospitals."""
    cycles: int = 3
    """Passes over all hospitals."""
    dataset: str = "breast_cancer"
    """Bundled dataset task."""
    alpha: float = 0.5
    """Dirichlet label-skew concentration (smaller is more skewed)."""
    seed: int = 0
    """Seed for the partition, the model and the order."""
    strategy: str = "learned"
    """Ordering strategy."""
    workdir: Path | None = None
    """Keep everything here (PKI, state, site directories, logs); a temp dir otherwise."""
    report: Path | None = None
    """Write the JSON report here."""

    def __post_init__(self) -> None:
        if not 1 <= self.sites <= 16:
            raise ValueError("--sites must be between 1 and 16")
        if not self.alpha > 0:
            raise ValueError("--alpha must be positive")


def demo_plan_toml(opts: DemoOptions, site_ids: list[str]) -> str:
    """The run plan the demo submits (a plan a study owner could have written)."""
    sites = ", ".join(f'"{s}"' for s in site_ids)
    return f"""\
[run]
name = "demo-{opts.dataset}"
seed = {opts.seed}
cycles = {opts.cycles}
sites = [{sites}]

[model]
name = "mlp"
args = {{ hidden = [32] }}

[task]
dataset = "tabular"

[ordering]
strategy = "{opts.strategy}"

[training]
optimizer = "sgd"
lr = 0.02
momentum = 0.9
weight_decay = 0.001
batch_size = 16
local_epochs = 3
"""


def run_demo(opts: DemoOptions, console: Console) -> dict[str, Any]:
    """Runs the demo and returns its report; raises BatonError on any failure."""
    started = time.monotonic()
    site_ids = [f"hospital-{i}" for i in range(1, opts.sites + 1)]
    with demo_workdir(opts.workdir, "baton-demo-", console) as root:
        console.print(
            f"[bold]Baton demo[/]: {opts.sites} hospitals, {opts.cycles} cycles, "
            f"{opts.dataset} (Dirichlet alpha={opts.alpha}), ordering '{opts.strategy}'"
        )
        layout, fed = provision(
            root,
            site_ids,
            dataset=opts.dataset,
            partition=Partition(kind="dirichlet", alpha=opts.alpha),
            seed=opts.seed,
            task="tabular",
        )
        for s in site_ids:
            d = fed.sites[s]
            console.print(
                f"  {s}: {len(d.train.y)} train / {len(d.val.y)} val rows, "
                f"labels {_histogram(d.train.y.tolist(), fed.schema.num_classes)}"
            )
        plan_toml = demo_plan_toml(opts, site_ids)
        plan = parse_plan(plan_toml)
        final, result_path = run_and_fetch(layout, site_ids, plan_toml, console, _accuracy)
        test_metrics = _evaluate_result(plan, fed, result_path)
        console.print("training the same model centrally on the pooled data, for comparison")
        central = train_centralized(plan, fed)
        report = _report(opts, plan, final, test_metrics, central, time.monotonic() - started, root)
        print_summary(
            console,
            report,
            title="Held-out test set",
            scores=[
                ("sequential (Baton)", report["final_accuracy"]),
                ("centralized (pooled data)", report["centralized_accuracy"]),
            ],
        )
        if opts.report is not None:
            opts.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            console.print(f"report written to {opts.report}")
        return report


@contextmanager
def demo_workdir(workdir: Path | None, prefix: str, console: Console) -> Iterator[Path]:
    """A demo's work directory: ``workdir``, kept afterwards, or a new temporary one,
    removed afterwards.

    Raises:
        BatonError: ``workdir`` already holds a federation.
    """
    if workdir is not None and (workdir / "ca").exists():
        raise BatonError(f"{workdir} already holds a federation; choose an empty --workdir")
    root = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"everything is kept in {root}")


def run_and_fetch(
    layout: LocalFederationLayout,
    site_ids: list[str],
    plan_toml: str,
    console: Console,
    describe: Callable[[Mapping[str, float]], str],
) -> tuple[admin_pb2.Run, Path]:
    """Starts the coordinator and the sites, has the study owner sign and submit
    ``plan_toml``, prints each hop (its metrics through ``describe``), and fetches the
    result; every process is stopped on the way out.

    Returns:
        The finished run and the opened result file (under the owner's directory).

    Raises:
        BatonError: The run did not succeed, a process died, or the result did not open.
    """
    with ProcessGroup() as group:
        port = start(layout, site_ids, group)
        console.print(
            f"coordinator on 127.0.0.1:{port} (mTLS); starting {len(site_ids)} site daemons"
        )
        with AdminClient(f"127.0.0.1:{port}", layout.admin_tls.load()) as client:
            wait_until_online(client, site_ids, group)
            owner = AppKeys.load(layout.owner_keys)
            run = client.create_run(plan_toml, owner)
            console.print(f"run {run.run_id} created: {run.total_hops} hops")
            _follow(client, run.run_id, run.total_hops, group, console, describe)
            final = client.get_run(run.run_id)
            if final.state != common_pb2.RUN_STATE_SUCCEEDED:
                raise BatonError(
                    f"run {run.run_id} ended {common_pb2.RunState.Name(final.state)}: {final.error}"
                )
            result_path = layout.owner_dir / f"{run.run_id}.safetensors"
            fetch_result(
                client,
                run.run_id,
                result_path,
                owner=owner,
                ca_pem=layout.admin_tls.load().ca_pem,
            )
    return final, result_path


def _accuracy(m: Mapping[str, float]) -> str:
    return (
        f"val acc {m.get('before_accuracy', float('nan')):.3f} -> "
        f"{m.get('after_accuracy', float('nan')):.3f}"
    )


def _follow(
    client: AdminClient,
    run_id: str,
    total: int,
    group: ProcessGroup,
    console: Console,
    describe: Callable[[Mapping[str, float]], str],
) -> None:
    for ev in client.watch(run_id):
        group.check_alive()
        if ev.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED:
            m = ev.metrics
            console.print(
                f"  hop {ev.hop_index + 1:>2}/{total}  {ev.site_id:<12} {describe(m)}"
                f"  ({m.get('train_seconds', 0.0):.2f}s)"
            )
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_FAILED:
            console.print(
                f"  [red]hop {ev.hop_index + 1} at {ev.site_id} failed:[/] {escape(ev.message)}"
            )
        elif ev.kind in (admin_pb2.EVENT_KIND_RUN_FAILED, admin_pb2.EVENT_KIND_RUN_CANCELLED):
            console.print(f"  [red]run ended:[/] {escape(ev.message)}")


def _evaluate_result(plan: RunPlan, fed: Federation, path: Path) -> dict[str, float]:
    hooks = fed.hooks
    model = fed.build_model(plan)
    hooks.load_travelling(model, load_state_file(path))
    with torch.no_grad():
        return hooks.evaluate(model, fed.test)


def _report(
    opts: DemoOptions,
    plan: RunPlan,
    run: admin_pb2.Run,
    test: dict[str, float],
    central: dict[str, float],
    seconds: float,
    root: Path,
) -> dict[str, Any]:
    hops = [
        {
            "hop": h.hop_index,
            "cycle": h.cycle,
            "site": h.site_id,
            "metrics": {"before": dict(h.metrics_before), "after": dict(h.metrics_after)},
            "num_examples": h.num_examples,
            "train_seconds": h.train_seconds,
        }
        for h in run.hops
    ]
    order = [[h.site_id for h in run.hops if h.cycle == c] for c in range(run.cycles)]
    return {
        "run_id": run.run_id,
        "dataset": opts.dataset,
        "partition": {"kind": "dirichlet", "alpha": opts.alpha, "seed": opts.seed},
        "sites": list(run.sites),
        "cycles": run.cycles,
        "strategy": run.strategy,
        "model": plan.model.name,
        "final_accuracy": test["accuracy"],
        "final_loss": test["loss"],
        "centralized_accuracy": central["accuracy"],
        "test_examples": int(test["num_examples"]),
        "hops": hops,
        "order": order,
        "seconds": round(seconds, 2),
        "workdir": str(root) if opts.workdir is not None else None,
    }


def _histogram(labels: list[int], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for y in labels:
        counts[y] += 1
    return counts
