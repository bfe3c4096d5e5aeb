"""Retention of the blob store: what ended runs and stale uploads leave is removed; what a
running run, a result fetch or a fresh upload needs is kept."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import cast

from typer.testing import CliRunner

from baton.domain import BlobRef
from coordinator.blobs import FileBlobStore
from coordinator.cli import app
from coordinator.retention import collect_garbage
from coordinator.store.base import HopRecord, RunRecord, RunState, SiteRecord
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore
from tests.conftest import Pki, coordinator_toml
from tests.unit.coordinator.test_scheduler import stored_completion

DAY = 86400.0


def blob(blobs: FileBlobStore, data: bytes) -> BlobRef:
    blobs.append(data.hex(), 0, data)
    return blobs.finish(
        data.hex(), expected_sha256=hashlib.sha256(data).hexdigest(), expected_size=len(data)
    )


def run_with_hops(store: MemoryStore, run_id: str, outputs: list[BlobRef]) -> None:
    store.create_run(
        RunRecord(
            run_id=run_id,
            name=run_id,
            plan_toml="",
            sites=("a",),
            cycles=len(outputs),
            strategy="fixed",
            total_hops=len(outputs),
            created_ms=1,
        )
    )
    store.add_hops(
        run_id,
        [HopRecord(run_id=run_id, hop_index=i, cycle=i, site_id="a") for i in range(len(outputs))],
    )
    for i, out in enumerate(outputs):
        store.assign_hop(run_id, i, input=outputs[i - 1] if i else None)
        stored_completion(store, run_id, i, out)


def age(root: Path, seconds: float) -> None:
    old = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def test_blobs_of_ended_runs_and_stale_partials_go_and_needed_ones_stay(tmp_path: Path) -> None:
    blobs, store = FileBlobStore(tmp_path / "blobs"), MemoryStore()
    store.upsert_site(SiteRecord(site_id="a", certificate_pem="p"))
    running = [blob(blobs, b"running-0"), blob(blobs, b"running-1")]
    succeeded = [blob(blobs, b"ok-0"), blob(blobs, b"ok-1")]
    failed = [blob(blobs, b"failed-0")]
    run_with_hops(store, "running", running)
    run_with_hops(store, "ok", succeeded)
    store.update_run("ok", state=RunState.SUCCEEDED, result=succeeded[-1])
    run_with_hops(store, "failed", failed)
    store.update_run("failed", state=RunState.FAILED, error="x")
    blobs.append("stalled", 0, b"half an upload")
    age(tmp_path / "blobs", 2 * DAY)
    fresh = blob(blobs, b"uploaded, CompleteHop not yet called")

    report = collect_garbage(store, tmp_path / "blobs", grace_seconds=DAY)

    assert (report.blobs, report.partials) == (2, 1)
    assert report.bytes_freed == len(b"ok-0") + len(b"failed-0") + len(b"half an upload")
    kept = {ref.blob_id for ref in [*running, succeeded[-1], fresh]}
    gone = {ref.blob_id for ref in [succeeded[0], *failed]}
    assert {b for b in kept | gone if blobs.exists(b)} == kept
    assert blobs.committed("stalled") == 0
    assert b"".join(blobs.read(succeeded[-1].blob_id)) == b"ok-1"  # the result still fetches


def test_coordinator_gc_says_what_it_would_remove_then_removes_it(tmp_path: Path, pki: Pki) -> None:
    state = tmp_path / "state"
    state.mkdir()
    blobs, store = FileBlobStore(state / "blobs"), SqliteStore(state / "coordinator.db")
    store.upsert_site(SiteRecord(site_id="a", certificate_pem="p"))
    ended = [blob(blobs, b"ended-0"), blob(blobs, b"ended-1")]
    run_with_hops(cast("MemoryStore", store), "gone", ended)  # the same Store contract
    store.update_run("gone", state=RunState.FAILED, error="x")
    blobs.append("stale", 0, b"half an upload")
    store.close()
    age(state / "blobs", 2 * DAY)
    config = coordinator_toml(pki, tmp_path / "coordinator.toml", state)
    blob_files = sorted(p for p in (state / "blobs").rglob("*") if p.is_file())
    dry = CliRunner().invoke(app, ["gc", "--config", str(config), "--dry-run"])
    assert (dry.exit_code, dry.output) == (
        0,
        "would remove 2 blob(s) of ended runs, 1 stale partial upload(s) and 2 upload "
        "record(s): 28 bytes (grace 86400 s)\n",
    )
    assert sorted(p for p in (state / "blobs").rglob("*") if p.is_file()) == blob_files
    done = CliRunner().invoke(app, ["gc", "--config", str(config)])
    assert done.output.splitlines()[-1].startswith(
        "removed 2 blob(s) of ended runs, 1 stale partial upload(s) and 2 upload record(s)"
    )
    assert not [p for p in (state / "blobs").rglob("*") if p.is_file()]


def test_coordinator_gc_without_a_state_database_is_a_clear_error(tmp_path: Path, pki: Pki) -> None:
    config = coordinator_toml(pki, tmp_path / "coordinator.toml", tmp_path / "none")
    result = CliRunner().invoke(app, ["gc", "--config", str(config)])
    assert result.exit_code == 102
    assert f"no coordinator state database at {tmp_path / 'none' / 'coordinator.db'}" in (
        result.output
    )
    assert not (tmp_path / "none").exists()
