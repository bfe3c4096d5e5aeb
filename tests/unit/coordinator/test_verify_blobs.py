"""Periodic verification of stored blobs: a corrupt copy is found without a download, and
an input not yet picked up is sealed again by its sender before anyone downloads it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from coordinator.engine.clocks import Phase
from coordinator.store.base import HopState
from coordinator.verify_blobs import BlobVerifier, _Pace
from tests.conftest import Pki
from tests.unit.coordinator.test_faults import faults_of, make
from tests.unit.coordinator.test_lost_copies import corrupt
from tests.unit.coordinator.test_scheduler import finish_hop


def _audited(monkeypatch: pytest.MonkeyPatch, sched: Any) -> list[tuple[str, str, dict[str, str]]]:
    """The audit entries the journal is asked to write, as (event, run, detail)."""
    entries: list[tuple[str, str, dict[str, str]]] = []
    record = sched.journal.record

    def spy(event: str, run_id: str, **kwargs: Any) -> None:
        entries.append((event, run_id, dict(kwargs.get("detail") or {})))
        record(event, run_id, **kwargs)

    monkeypatch.setattr(sched.journal, "record", spy)
    return entries


def test_a_corrupt_input_is_found_and_sealed_again_before_any_download(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, blobs, sched, _, run_id = make(pki, "abc", "")
    first = finish_hop(sched, blobs, run_id, 0, "a")
    audited = _audited(monkeypatch, sched)
    verifier = BlobVerifier(store, blobs, sched, interval_seconds=3600)
    clean = verifier.sweep()
    assert (clean.checked, clean.corrupt, clean.resealed) == (1, 0, 0)
    assert clean.bytes_read == first.size
    corrupt(blobs, first.blob_id)
    with caplog.at_level(logging.ERROR, logger="coordinator.verify_blobs"):
        report = verifier.sweep()
    assert (report.checked, report.corrupt, report.resealed) == (1, 1, 1)
    assert f"stored copy {first.blob_id[:12]} (hop 1) fails its SHA-256 check" in caplog.text
    assert audited[0] == (
        "blob_corrupt",
        run_id,
        {"blob": first.blob_id, "problem": "fails its SHA-256 check"},
    )
    hops = store.list_hops(run_id)
    assert [(h.site_id, h.state) for h in hops[:2]] == [
        ("a", HopState.ASSIGNED),  # offered again, to seal its output again
        ("b", HopState.PENDING),  # waits for the new copy: the bad one is never sent
    ]
    assert faults_of(store, run_id) == [
        "reseal: the coordinator's copy of hop 1 (its output, sealed by a for hop 2 at b) "
        "fails its SHA-256 check; a seals it again for b"
    ]


def test_an_input_already_downloaded_is_reported_not_sealed_again(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, blobs, sched, _, run_id = make(pki, "abc", "")
    first = finish_hop(sched, blobs, run_id, 0, "a")
    sched.clocks.touch(run_id, 1, "b", Phase.TRAINING)  # b has downloaded it and trains
    audited = _audited(monkeypatch, sched)
    corrupt(blobs, first.blob_id)
    report = BlobVerifier(store, blobs, sched, interval_seconds=3600).sweep()
    assert (report.checked, report.corrupt, report.resealed) == (1, 1, 0)
    assert [e[0] for e in audited] == ["blob_corrupt"]
    assert store.get_hop(run_id, 1).state is HopState.ASSIGNED
    assert faults_of(store, run_id) == []


def test_off_starts_no_thread(pki: Pki) -> None:
    store, blobs, sched, _, _ = make(pki, "ab", "")
    verifier = BlobVerifier(store, blobs, sched, interval_seconds=0)
    verifier.start()
    assert not verifier._thread.is_alive()
    verifier.stop()


class _Waits(threading.Event):
    """An event that records how long it was asked to wait, without waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(timeout or 0.0)
        return False


def test_reading_is_paced_to_the_rate() -> None:
    waits = _Waits()
    pace = _Pace(1000, waits)
    pace(4000)  # 4 s of reading at 1000 B/s, done at once: wait about 4 s
    assert pace.bytes == 4000
    (waited,) = waits.waited
    assert 3.5 < waited <= 4.0
