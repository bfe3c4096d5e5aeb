"""Strategies see only published profiles, hop metrics and probe metrics: never data rows."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import io
import itertools
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ordering
from baton.domain import DataProfile
from baton.ml.data import Split, profile_of
from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from ordering import (
    HopOutcome,
    OrderingContext,
    OrderingStrategy,
    ProbeOutcome,
    ProbePlanner,
    known_strategies,
    make_strategy,
)
from sim.lab.grid import OracleProber
from sim.lab.oracle import evaluate_orders
from sim.lab.runner import gather_probes, published_profiles, strategy_schedule
from sim.tasks import Federation, Partition, make_federation

SITES = ("site-0", "site-1", "site-2")
ALLOWED_IMPORTS = {"__future__", "collections", "dataclasses", "hashlib", "itertools", "math"}
ALLOWED_IMPORTS |= {"random", "string", "typing", "numpy", "baton.errors", "baton.domain"}
ALLOWED_IMPORTS |= {"ordering"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_ordering_imports_nothing_that_holds_data() -> None:
    root = Path(ordering.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                allowed = any(name == a or name.startswith(a + ".") for a in ALLOWED_IMPORTS)
                assert allowed, f"{path.name} imports {name}"


def test_the_context_holds_only_profiles_metrics_and_schedule_facts() -> None:
    def fields(cls: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert fields(OrderingContext) == {
        *("sites", "profiles", "history", "cycle", "seed", "probes"),
        *("metric", "higher_is_better"),  # the plan's primary metric: a name and a direction
    }
    assert fields(HopOutcome) == {"cycle", "site_id", "metrics_before", "metrics_after"}
    assert fields(ProbeOutcome) == {"order", "metrics"}
    assert fields(DataProfile) == {"num_examples", "label_histogram", "schema_hash", "task"}


class Recorder:
    """Wraps a strategy and keeps every context it is called with."""

    def __init__(self, inner: OrderingStrategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.contexts: list[OrderingContext] = []

    def cycle_order(self, ctx: OrderingContext) -> tuple[str, ...]:
        self.contexts.append(ctx)
        return self.inner.cycle_order(ctx)


def _plan() -> RunPlan:
    return RunPlan(
        run=RunSection(name="t", sites=SITES, cycles=3, seed=1),
        model=ModelSection(name="mlp", args={"hidden": [8]}),
        task=TaskSection(dataset="wine"),
        training=TrainingSection(local_epochs=1, logit_adjustment=False),
    )


def _federation() -> Federation:
    return make_federation("wine", SITES, Partition(kind="dirichlet", alpha=0.5), seed=3)


def _probes(plan: RunPlan, fed: Federation) -> tuple[ProbeOutcome, ...]:
    scores = evaluate_orders(plan, fed, [SITES, SITES[::-1], SITES[1:] + SITES[:1]], [1])
    return tuple(
        ProbeOutcome(order=o, metrics={"accuracy": float(scores.val[i, 0])})
        for i, o in enumerate(scores.orders)
    )


def _plain(value: Any) -> bool:
    """Only numbers, strings, and tuples or mappings of them: no arrays, tensors or splits."""
    if isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


@pytest.mark.parametrize("name", known_strategies())
def test_contexts_from_a_simulation_carry_only_published_aggregates(name: str) -> None:
    plan, fed = _plan(), _federation()
    recorder = Recorder(make_strategy(name, {}))
    strategy_schedule(recorder, plan, fed, probes=_probes(plan, fed))
    assert [c.cycle for c in recorder.contexts] == [0, 1, 2]
    for ctx in recorder.contexts:
        assert _plain(ctx)
        assert dict(ctx.profiles) == {s: profile_of(fed.schema, d) for s, d in fed.sites.items()}
        # The last hop of the previous cycle is still training when a cycle is planned.
        assert len(ctx.history) == max(0, ctx.cycle * len(SITES) - 1)
        for hop in ctx.history:
            assert set(hop.metrics_before) == set(hop.metrics_after)
            assert set(hop.metrics_before) == {"accuracy", "loss", "num_examples"}
            # Validation metrics of the site's own validation split, not the test set.
            assert hop.metrics_before["num_examples"] == len(fed.sites[hop.site_id].val)
        for probe in ctx.probes:
            assert set(probe.metrics) == {"accuracy"}


def _without_test_signal(fed: Federation) -> Federation:
    """The same sites, and a held-out test set with scrambled rows and labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=fed.test.x.shape).astype(np.float32)
    y = rng.permutation(fed.test.y)
    return dataclasses.replace(fed, test=Split(x=x, y=y))


class _Forbidden(Exception):
    pass


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise _Forbidden("a strategy tried I/O or pooled data")


@pytest.mark.parametrize("name", known_strategies())
def test_orders_do_not_depend_on_anything_outside_the_context(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, fed = _plan(), _federation()
    probes = _probes(plan, fed)
    scrambled = _without_test_signal(fed)
    recorder = Recorder(make_strategy(name, {}))
    schedule = strategy_schedule(recorder, plan, fed, probes=probes)
    assert strategy_schedule(make_strategy(name, {}), plan, scrambled, probes=probes) == schedule
    # Replaying the recorded contexts with I/O, sockets and pooled data unavailable gives
    # the same orders: the context is all a strategy reads.
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", _refuse)
        m.setattr(io, "open", _refuse)
        m.setattr(socket, "socket", _refuse)
        m.setattr(Federation, "pooled_train", _refuse)
        m.setattr(np, "load", _refuse)
        m.setitem(sys.modules, "sim.simulate", None)
        m.setitem(sys.modules, "baton.ml.trainer", None)
        fresh = make_strategy(name, {})
        assert tuple(fresh.cycle_order(c) for c in recorder.contexts) == schedule


class _PlannerRecorder:
    """Wraps a probe planner and keeps every context it is called with."""

    def __init__(self, inner: ProbePlanner) -> None:
        self.inner = inner
        self.contexts: list[OrderingContext] = []

    def next_probe(self, ctx: OrderingContext, budget: int) -> tuple[str, ...] | None:
        self.contexts.append(ctx)
        return self.inner.next_probe(ctx, budget)


@pytest.mark.parametrize(
    "name", [n for n in known_strategies() if isinstance(make_strategy(n, {}), ProbePlanner)]
)
def test_probe_plans_see_only_profiles_and_validation_metrics(name: str) -> None:
    plan, fed = _plan(), _federation()
    plan = dataclasses.replace(plan, run=dataclasses.replace(plan.run, cycles=1))
    planned = []
    for federation in (fed, _without_test_signal(fed)):
        scores = evaluate_orders(plan, federation, list(itertools.permutations(SITES)), [0, 1])
        strategy = make_strategy(name, {})
        assert isinstance(strategy, ProbePlanner)
        recorder = _PlannerRecorder(strategy)
        probes = gather_probes(
            recorder,
            SITES,
            published_profiles(federation),
            seed=0,
            budget=8,
            measure=OracleProber(scores, 0, plan, federation),
        )
        for ctx in recorder.contexts:
            assert _plain(ctx)
            assert ctx.history == ()
            assert all(set(p.metrics) == {"accuracy", "loss"} for p in ctx.probes)
        planned.append(probes)
    # A held-out test set without signal changes nothing the planner sees or plans.
    assert planned[0] == planned[1]
