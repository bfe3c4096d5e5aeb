"""A run plan simulated in process on the sites' own data directories (``baton simulate``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.domain import group_by_value
from baton.errors import ConfigError
from baton.ml.data import Schema, SiteData, Split
from baton.ml.table import read_table
from baton.ml.task import site_task
from sim.tasks import Federation

if TYPE_CHECKING:
    from baton.plan import RunPlan
    from sim.simulate import SimulationResult

logger = logging.getLogger(__name__)

SHORT_HASH = 12
"""Hex digits of a schema hash shown in a refusal, as the coordinator shows them."""


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class OwnDataResult:
    """What :func:`simulate_sites` found."""

    simulation: SimulationResult
    """Every hop and the final weights."""
    orders: tuple[tuple[str, ...], ...]
    """The sites of each cycle, as the plan's ordering strategy chose them."""
    site_metrics: dict[str, dict[str, float]]
    """The final model on each site's validation split, in the plan's site order."""
    test_metrics: dict[str, float] | None
    """The final model on the held-out data, if some was given."""
    seconds: float
    """Wall-clock seconds the simulation took."""


def parse_site_options(values: Sequence[str]) -> dict[str, Path]:
    """The ``--site NAME=DIR`` options as site id to data directory, in the given order.

    Raises:
        ConfigError: A value is not ``NAME=DIR`` or names a site twice.
    """
    sites: dict[str, Path] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--site {value!r} must be NAME=DIR")
        if name in sites:
            raise ConfigError(f"--site {name} is given twice")
        sites[name] = Path(directory)
    return sites


def read_federation(
    plan: RunPlan, site_dirs: Mapping[str, Path], *, test: Path | None = None
) -> Federation:
    """Reads every site's data directory with the task its ``schema.json`` names.

    Constraints, as the coordinator admits a plan: ``site_dirs`` MUST name exactly the
    plan's sites; every site MUST hold the plan's ``task.dataset`` and all of them the same
    schema hash. The sites come in the plan's order (the order strategies are given).

    Args:
        plan: The run plan.
        site_dirs: Site id to its data directory.
        test: Held-out data: a data directory with the sites' schema (its validation split
            is used) or one CSV or Parquet file (:func:`baton.ml.table.read_table`). Without
            it the federation's ``test`` split is the sites' validation splits pooled.

    Raises:
        ConfigError: The sites do not match the plan's, hold another task, disagree on the
            schema, or the test directory holds another schema.
        DataError: A site's or the test's data cannot be read or fails validation.
    """
    _check_names(plan.run.sites, site_dirs)
    read: dict[str, tuple[Schema, SiteData]] = {}
    for site in plan.run.sites:
        directory = site_dirs[site]
        read[site] = site_task(directory).read_site_data(directory)
    schemas = {site: schema for site, (schema, _) in read.items()}
    _check_schemas(plan.task.dataset, schemas)
    schema = schemas[plan.run.sites[0]]
    sites = {site: data for site, (_, data) in read.items()}
    held_out = read_test(test, schema) if test else _pooled([d.val for d in sites.values()])
    # A task building on a pretrained base finds it in the first site's directory, as
    # that site would when it builds hop 0's model.
    first = site_dirs[plan.run.sites[0]]
    return Federation(schema=schema, sites=sites, test=held_out, model_dir=first)


def read_test(path: Path, schema: Schema) -> Split:
    """Held-out data with the sites' schema: a data directory's validation split, or a file.

    Raises:
        ConfigError: The directory's schema is not ``schema``.
        DataError: The data cannot be read or fails validation.
    """
    if not path.is_dir():
        return read_table(path, schema)
    held, data = site_task(path).read_site_data(path)
    if held.schema_hash() != schema.schema_hash():
        raise ConfigError(
            f"{path}: the test data holds schema {held.schema_hash()[:SHORT_HASH]}, "
            f"not the sites' schema {schema.schema_hash()[:SHORT_HASH]}"
        )
    return data.val


def simulate_sites(
    plan: RunPlan, site_dirs: Mapping[str, Path], *, test: Path | None = None
) -> OwnDataResult:
    """Runs ``plan`` in process on the sites' own data, as a real run would train it.

    Every cycle's order comes from the plan's ordering strategy, given what the
    coordinator would give it (:func:`sim.lab.runner.strategy_schedule`); the hops train
    with the sites' own trainer (:func:`sim.simulate.simulate_sequential`).

    Raises:
        ConfigError: See :func:`read_federation`; also an unknown ordering strategy, or a
            plan that names probe runs (runs of a live federation a simulation lacks).
        DataError: See :func:`read_federation`.
    """
    from ordering import make_strategy
    from sim.lab.runner import strategy_schedule
    from sim.simulate import simulate_sequential

    started = time.monotonic()
    if plan.ordering.probe_runs:
        raise ConfigError(
            "the plan's [ordering] probe_runs are runs of a live federation, "
            "which a simulation does not have; remove them to simulate"
        )
    strategy = make_strategy(plan.ordering.strategy, plan.ordering.options)
    federation = read_federation(plan, site_dirs, test=test)
    orders = strategy_schedule(strategy, plan, federation)
    simulation = simulate_sequential(plan, federation, orders)
    hooks = federation.hooks
    model = federation.build_model(plan)
    hooks.load_travelling(model, simulation.state)
    site_metrics = {site: hooks.evaluate(model, d.val) for site, d in federation.sites.items()}
    return OwnDataResult(
        simulation=simulation,
        orders=orders,
        site_metrics=site_metrics,
        test_metrics=simulation.test_metrics if test is not None else None,
        seconds=time.monotonic() - started,
    )


def report_of(plan: RunPlan, result: OwnDataResult) -> dict[str, Any]:
    """The JSON report of a simulation: its hops as the demo reports them, and the scores
    in the plan's primary metric ``M`` (``[task] metric``: ``accuracy``, ``perplexity``...).

    ``metric`` names ``M``; ``site_M`` holds each site's validation score, ``mean_site_M``
    their mean, ``test_M`` the held-out score (None without held-out data) and ``final_M``
    the held-out score if there was held-out data, the mean of the sites' otherwise.

    Raises:
        ConfigError: The task's metrics lack the plan's primary metric.
    """
    metric = plan.task.metric
    site_scores = {s: _score(m, metric) for s, m in result.site_metrics.items()}
    mean = float(np.mean(list(site_scores.values())))
    test = result.test_metrics
    test_score = None if test is None else _score(test, metric)
    return {
        "run": plan.run.name,
        "task": plan.task.dataset,
        "model": plan.model.name,
        "strategy": plan.ordering.strategy,
        "sites": list(plan.run.sites),
        "cycles": plan.run.cycles,
        "order": [list(o) for o in result.orders],
        "hops": [
            {
                "hop": h.hop,
                "cycle": h.cycle,
                "site": h.site,
                "metrics": {"before": h.metrics_before, "after": h.metrics_after},
                "num_examples": h.train.num_examples,
                "train_seconds": h.train.train_seconds,
            }
            for h in result.simulation.hops
        ],
        "metric": metric,
        f"site_{metric}": site_scores,
        f"mean_site_{metric}": mean,
        f"test_{metric}": test_score,
        "test_examples": None if test is None else int(test["num_examples"]),
        f"final_{metric}": mean if test_score is None else test_score,
        "seconds": round(result.seconds, 2),
    }


def _score(metrics: Mapping[str, float], metric: str) -> float:
    if metric not in metrics:
        raise ConfigError(
            f"the plan's primary metric {metric!r} is not among the task's metrics "
            f"({', '.join(sorted(metrics))})"
        )
    return float(metrics[metric])


def score_rows(report: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The final model's scores in the report's ``metric`` as rows of the summary table:
    each site, their mean, the held-out data if any."""
    metric = report["metric"]
    rows = [(f"{site} (validation)", v) for site, v in report[f"site_{metric}"].items()]
    rows.append(("mean of the sites", report[f"mean_site_{metric}"]))
    if report[f"test_{metric}"] is not None:
        rows.append(("held-out test data", report[f"test_{metric}"]))
    return rows


def _check_names(plan_sites: Sequence[str], site_dirs: Mapping[str, Path]) -> None:
    missing = [s for s in plan_sites if s not in site_dirs]
    extra = [s for s in site_dirs if s not in plan_sites]
    if missing or extra:
        parts = ([f"no --site for {', '.join(missing)}"] if missing else []) + (
            [f"{', '.join(extra)} not in the plan"] if extra else []
        )
        raise ConfigError(
            f"--site names must be the plan's sites ({', '.join(plan_sites)}): " + "; ".join(parts)
        )


def _check_schemas(dataset: str, schemas: Mapping[str, Schema]) -> None:
    """Refuses sites of another task, or sites that disagree on the schema, naming the
    sites as the coordinator does when it admits a plan."""
    other_task = {s: sc.task for s, sc in schemas.items() if sc.task != dataset}
    if other_task:
        held = _holding(other_task, lambda task: f"task {task!r}")
        raise ConfigError(f"run plan trains task {dataset!r}, but {held}")
    hashes = {s: sc.schema_hash() for s, sc in schemas.items()}
    if len(set(hashes.values())) > 1:
        raise ConfigError(
            "sites disagree on the data schema: "
            f"{_holding(hashes, lambda digest: f'schema {digest[:SHORT_HASH]}')}; "
            "check that every site's feature columns and classes match"
        )


def _holding(values: Mapping[str, str], what: Callable[[str], str]) -> str:
    """``sites a, b hold <what>; site c holds <what>``: the largest group first, then by
    first site."""
    return "; ".join(
        f"site {g[0]} holds {what(v)}" if len(g) == 1 else f"sites {', '.join(g)} hold {what(v)}"
        for v, g in group_by_value(values)
    )


def _pooled(splits: Sequence[Split]) -> Split:
    return Split(x=np.concatenate([s.x for s in splits]), y=np.concatenate([s.y for s in splits]))
