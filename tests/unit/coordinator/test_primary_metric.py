"""The coordinator orders sites by the plan's primary metric, in the plan's direction."""

from __future__ import annotations

import pytest

from coordinator.blobs import MemoryBlobStore
from coordinator.engine.runs import Scheduler
from coordinator.store.base import SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki
from tests.unit.coordinator.test_scheduler import WINE, Clock, put

PLAN = """
[run]
name = "lm"
sites = ["a", "b", "c"]
cycles = 2

[model]
name = "logreg"

[task]
dataset = "wine"
metric = "perplexity"
higher_is_better = {higher}

[ordering]
strategy = "greedy_loss"
"""
PERPLEXITY = {"a": 30.0, "b": 5.0}
"""The incoming model's perplexity at the sites that finished cycle 0 before cycle 1 is
planned (the last site, c, is still training then, so it counts as hardest)."""


@pytest.mark.parametrize(("higher", "second_cycle"), [("false", "cab"), ("true", "cba")])
def test_the_next_cycle_starts_with_the_worst_site_by_the_plans_direction(
    pki: Pki, higher: str, second_cycle: str
) -> None:
    store, blobs = MemoryStore(), MemoryBlobStore()
    for s in "abc":
        store.upsert_site(SiteRecord(site_id=s, certificate_pem="pem", profile=WINE))
    sched = Scheduler(store, blobs, ca_pem=pki.ca_pem, clock=Clock())
    plan = PLAN.format(higher=higher)
    run = sched.create_run(plan, pki.signed_plan(plan))
    assert [h.site_id for h in store.list_hops(run.run_id)] == ["a", "b", "c"]
    for hop, site in enumerate("ab"):
        sched.complete_hop(
            site,
            run.run_id,
            hop,
            output_manifest=b"manifest",
            output=put(blobs, f"{hop}".encode(), f"t{hop}"),
            metrics_before={"perplexity": PERPLEXITY[site], "loss": 1.0, "accuracy": 0.5},
            metrics_after={"perplexity": 2.0, "loss": 0.5, "accuracy": 0.6},
            num_examples=5,
            train_seconds=0.01,
        )
    planned = [h.site_id for h in store.list_hops(run.run_id) if h.cycle == 1]
    assert "".join(planned) == second_cycle
