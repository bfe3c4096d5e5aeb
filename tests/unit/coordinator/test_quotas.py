"""Per-site quotas: what a site holds (its hops' outputs in running runs, its uploads),
the refusal past the quota, and the config that sets it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from baton.domain import BlobRef
from coordinator.config import CoordinatorConfig
from coordinator.engine.quotas import LEDGER_FILE, OverQuota, SiteQuotas
from coordinator.store.base import RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from tests.conftest import Pki
from tests.unit.coordinator.test_retention import run_with_hops


def _store() -> MemoryStore:
    store = MemoryStore()
    store.upsert_site(SiteRecord(site_id="a", certificate_pem="p"))
    run_with_hops(store, "r1", [BlobRef(blob_id="1" * 64, size=100)])
    run_with_hops(store, "r2", [BlobRef(blob_id="2" * 64, size=50)])
    return store


def test_usage_counts_outputs_of_running_runs_and_uploads_once_each() -> None:
    store = _store()
    quotas = SiteQuotas(store, quota_bytes=1000)
    assert quotas.usage("a") == 150
    quotas.admit("a", "k1", run_id="r1", blob_id="3" * 64, size=30)
    quotas.admit("a", "k2", run_id="r1", blob_id="1" * 64, size=100)  # r1's output again
    assert (quotas.usage("a"), quotas.usage("b")) == (180, 0)
    quotas.admit("a", "k1", run_id="r1", blob_id="3" * 64, size=30)  # a resumed upload
    assert quotas.usage("a") == 180
    store.update_run("r1", state=RunState.FAILED, error="x")
    assert quotas.usage("a") == 50  # an ended run counts no more, its uploads neither
    quotas.admit("a", "k3", run_id="r2", blob_id="4" * 64, size=20)
    quotas.forget("k3")
    assert quotas.usage("a") == 50


def test_an_upload_past_the_quota_is_refused_and_not_counted() -> None:
    quotas = SiteQuotas(_store(), quota_bytes=200)
    quotas.admit("a", "k1", run_id="r2", blob_id="3" * 64, size=50)  # exactly the quota
    with pytest.raises(OverQuota) as caught:
        quotas.admit("a", "k2", run_id="r2", blob_id="4" * 64, size=1)
    assert caught.value.message == (
        "upload of 1 bytes refused: site a holds 200 bytes at the coordinator and its quota "
        "(site_quota_bytes) is 200; space is freed as its runs end (their blobs are then "
        "garbage-collected)"
    )
    assert quotas.usage("a") == 200
    unlimited = SiteQuotas(_store(), quota_bytes=0)
    unlimited.admit("a", "k1", run_id="r2", blob_id="3" * 64, size=1 << 50)
    assert unlimited.usage("a") == 150 + (1 << 50)


def test_the_quota_is_zero_or_at_least_the_largest_blob(pki: Pki) -> None:
    files = pki.files("coordinator")
    assert CoordinatorConfig(tls=files).site_quota_bytes == 256 << 30
    assert CoordinatorConfig(tls=files, site_quota_bytes=0).site_quota_bytes == 0
    with pytest.raises(ValueError) as caught:
        CoordinatorConfig(tls=files, site_quota_bytes=1 << 30, max_blob_bytes=2 << 30)
    assert str(caught.value) == (
        f"'site_quota_bytes' must be 0 (no quota) or at least 'max_blob_bytes' ({2 << 30}), "
        f"not {1 << 30}"
    )


def test_a_restarted_coordinator_counts_the_uploads_admitted_before(tmp_path: Path) -> None:
    store, ledger = _store(), tmp_path / LEDGER_FILE
    before = SiteQuotas(store, quota_bytes=300, ledger=ledger)
    before.admit("a", "k1", run_id="r2", blob_id="3" * 64, size=120)  # e.g. left partial
    before.admit("a", "k2", run_id="r2", blob_id="4" * 64, size=10)
    before.forget("k2")  # refused or discarded: nothing of it kept

    after = SiteQuotas(store, quota_bytes=300, ledger=ledger)

    assert after.usage("a") == 150 + 120
    with pytest.raises(OverQuota):  # the restart did not free the partial upload's room
        after.admit("a", "k3", run_id="r2", blob_id="5" * 64, size=31)
    store.update_run("r2", state=RunState.CANCELLED, error="x")
    assert after.usage("a") == 100  # its run ended: the ledger forgets it too
    assert SiteQuotas(store, quota_bytes=300, ledger=ledger).usage("a") == 100


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"k": ["a", "r2"]}'])
def test_an_unreadable_ledger_is_logged_and_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    ledger = tmp_path / LEDGER_FILE
    ledger.write_text(text)
    with caplog.at_level(logging.WARNING, logger="coordinator.engine.quotas"):
        quotas = SiteQuotas(_store(), quota_bytes=300, ledger=ledger)
    assert quotas.usage("a") == 150
    assert f"the quota ledger {ledger} cannot be read" in caplog.text
    quotas.admit("a", "k1", run_id="r2", blob_id="3" * 64, size=1)  # and writes it anew
    assert SiteQuotas(_store(), quota_bytes=300, ledger=ledger).usage("a") == 151
