"""CreateRun admits a plan only if its sites published data of its task, all of one schema."""

from __future__ import annotations

import re

import pytest

from baton.domain import DataProfile
from baton.errors import ConfigError
from baton.ml.data import Schema
from coordinator.blobs import MemoryBlobStore
from coordinator.engine.runs import Scheduler
from coordinator.store.base import HopState, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki

PLAN = """
[run]
name = "admission"
sites = ["a", "b", "c"]

[model]
name = "logreg"

[task]
dataset = "wine"

[ordering]
strategy = "fixed"
"""

WINE = Schema(
    task="wine",
    feature_names=("alcohol", "malic_acid", "ash"),
    num_classes=3,
    class_names=("x", "y", "z"),
)
SWAPPED = Schema(
    task="wine",
    feature_names=("malic_acid", "alcohol", "ash"),
    num_classes=3,
    class_names=("x", "y", "z"),
)
CANCER = Schema(
    task="breast_cancer",
    feature_names=("radius", "texture"),
    num_classes=2,
    class_names=("malignant", "benign"),
)


def profile(schema: Schema) -> DataProfile:
    """What a site holding ``schema`` publishes at registration."""
    return DataProfile(
        num_examples=30,
        label_histogram=(10, 10, 10),
        schema_hash=schema.schema_hash(),
        task=schema.task,
    )


def scheduler(pki: Pki, profiles: dict[str, DataProfile]) -> tuple[MemoryStore, Scheduler]:
    store = MemoryStore()
    for site, published in profiles.items():
        store.upsert_site(SiteRecord(site_id=site, certificate_pem="pem", profile=published))
    return store, Scheduler(store, MemoryBlobStore(), ca_pem=pki.ca_pem)


def refusal(pki: Pki, profiles: dict[str, DataProfile]) -> str:
    """Creates the plan's run, asserts it is refused and nothing recorded; the message."""
    store, sched = scheduler(pki, profiles)
    with pytest.raises(ConfigError) as refused:
        sched.create_run(PLAN, pki.signed_plan(PLAN))
    assert store.list_runs() == []
    return refused.value.public_message


def test_sites_with_one_schema_of_the_plans_task_are_admitted(pki: Pki) -> None:
    store, sched = scheduler(pki, {s: profile(WINE) for s in "abc"})
    run = sched.create_run(PLAN, pki.signed_plan(PLAN))
    assert (run.state, run.sites) == (RunState.RUNNING, ("a", "b", "c"))
    assert store.get_hop(run.run_id, 0).state is HopState.ASSIGNED


def test_a_site_with_permuted_feature_columns_is_named_apart_from_the_others(
    pki: Pki,
) -> None:
    message = refusal(pki, {"a": profile(WINE), "b": profile(SWAPPED), "c": profile(WINE)})
    assert message == (
        f"sites disagree on the data schema: a, c hold schema {WINE.schema_hash()[:12]}; "
        f"b holds schema {SWAPPED.schema_hash()[:12]}; "
        "check that every site's feature columns and classes match"
    )


def test_a_site_holding_another_task_is_named(pki: Pki) -> None:
    message = refusal(pki, {"a": profile(WINE), "b": profile(WINE), "c": profile(CANCER)})
    assert message == "run plan trains task 'wine', but site c holds task 'breast_cancer'"


def test_sites_that_published_no_data_yet_are_named(pki: Pki) -> None:
    message = refusal(pki, {"a": profile(WINE), "b": DataProfile(), "c": DataProfile()})
    assert re.match(r"^sites b, c published no data schema \(no data yet\)", message)


def test_sites_outside_the_plan_do_not_count(pki: Pki) -> None:
    profiles = {**{s: profile(WINE) for s in "abc"}, "d": profile(CANCER), "e": DataProfile()}
    store, sched = scheduler(pki, profiles)
    run = sched.create_run(PLAN, pki.signed_plan(PLAN))
    assert store.get_run(run.run_id).state is RunState.RUNNING
