"""The ``Store`` contract, checked against every implementation (memory and SQLite)."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import pytest

from baton.domain import BlobRef, Capabilities, DataProfile, Device
from baton.errors import ConflictError, NotFoundError, StoreError
from coordinator.store.base import (
    EventKind,
    EventRecord,
    HopRecord,
    HopState,
    RunRecord,
    RunState,
    SiteRecord,
    Store,
)
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

BLOB_A = BlobRef(blob_id="a" * 64, size=1234)
BLOB_B = BlobRef(blob_id="0123456789abcdef" * 4, size=2**40)
TERMINAL = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _site(site_id: str = "mercy", **changes: object) -> SiteRecord:
    site = SiteRecord(
        site_id=site_id,
        certificate_pem=PEM,
        capabilities=Capabilities(
            cpu_count=64,
            memory_bytes=2**39,
            devices=(
                Device(kind="cuda", name="NVIDIA H100 80GB HBM3", memory_bytes=85_000_000_000),
                Device(kind="cuda", name="NVIDIA H100 80GB HBM3", memory_bytes=85_000_000_001),
            ),
        ),
        profile=DataProfile(
            num_examples=1500,
            label_histogram=(700, 0, 800),
            schema_hash="f" * 64,
            task="breast_cancer",
        ),
        software_version="0.1.0",
        signing_certificate_pem=PEM.replace("MIIB", "MIIC"),
        encryption_certificate_pem=PEM.replace("MIIB", "MIID"),
        registered_ms=1_700_000_000_000,
        last_seen_ms=1_700_000_000_500,
    )
    return replace(site, **changes)  # type: ignore[arg-type]


def _run(run_id: str = "run-1", created_ms: int = 1_000, **changes: object) -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        name='Hôpital study "α"',
        plan_toml='[run]\nname = "x"\nsites = ["mercy", "general"]\n',
        sites=("mercy", "general"),
        cycles=3,
        strategy="reshuffle",
        total_hops=6,
        created_ms=created_ms,
        plan_signature=bytes(range(64)),
        owner_signing_certificate_pem=PEM.replace("MIIB", "MIIE"),
        owner_encryption_certificate_pem=PEM.replace("MIIB", "MIIF"),
    )
    return replace(run, **changes)  # type: ignore[arg-type]


def _hops(run_id: str, start: int, count: int, site_id: str = "mercy") -> list[HopRecord]:
    return [
        HopRecord(run_id=run_id, hop_index=i, cycle=i // 2, site_id=site_id)
        for i in range(start, start + count)
    ]


def _complete(store: Store, run_id: str, index: int, **changes: object) -> HopRecord:
    kwargs: dict[str, object] = {
        "output": BLOB_B,
        "metrics_before": {"accuracy": 0.5, "loss": 0.1 + 0.2},
        "metrics_after": {"accuracy": 0.875, "loss": 1e-300, "grad_norm": math.inf},
        "num_examples": 1500,
        "train_seconds": 12.345678901234567,
        "output_manifest": b"\x00signed manifest\xff" * 40,
    }
    kwargs.update(changes)
    return store.complete_hop(run_id, index, **kwargs)  # type: ignore[arg-type]


def _in_threads(work: Callable[[int], object], count: int) -> None:
    """Runs ``work(0)`` ... ``work(count - 1)`` in parallel threads and waits for them."""
    pool = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


class StoreContract:
    """Every ``Store`` implementation passes these; subclasses say how to build one."""

    def make_store(self, tmp_path: Path) -> Store:
        """Returns a new, empty store."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = self.make_store(tmp_path)
        yield store
        store.close()

    @pytest.fixture
    def run_with_hops(self, store: Store) -> str:
        store.upsert_site(_site("mercy"))
        store.create_run(_run("run-1"))
        store.add_hops("run-1", _hops("run-1", 0, 4))
        return "run-1"

    # -- sites --------------------------------------------------------------------------

    def test_site_round_trips_every_field(self, store: Store) -> None:
        site = _site()
        store.upsert_site(site)
        assert store.get_site("mercy") == site
        bare = SiteRecord(site_id="bare", certificate_pem="")
        store.upsert_site(bare)
        assert store.get_site("bare") == bare
        assert store.get_site("bare").capabilities.devices == ()

    def test_upsert_replaces_the_whole_registration(self, store: Store) -> None:
        store.upsert_site(_site())
        new = _site(
            software_version="0.2.0",
            capabilities=Capabilities(cpu_count=2),
            profile=DataProfile(num_examples=3, label_histogram=(1, 2)),
        )
        store.upsert_site(new)
        assert store.get_site("mercy") == new
        assert store.list_sites() == [new]

    def test_touch_sites_sets_only_last_seen_never_back_and_skips_strangers(
        self, store: Store
    ) -> None:
        store.upsert_site(_site())
        store.upsert_site(_site("county"))
        store.touch_sites({"mercy": 1_800_000_000_000, "county": 5, "ghost": 7})
        assert store.get_site("mercy") == _site(last_seen_ms=1_800_000_000_000)
        assert store.get_site("county") == _site("county")  # 5 is older than its last seen
        assert [s.site_id for s in store.list_sites()] == ["county", "mercy"]

    def test_unknown_site_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError) as info:
            store.get_site("ghost")
        assert info.value.site_id == "ghost"
        with pytest.raises(NotFoundError):
            store.assigned_hops_for_site("ghost")

    def test_list_sites_is_ordered_by_id(self, store: Store) -> None:
        for site_id in ("university", "county", "mercy"):
            store.upsert_site(_site(site_id))
        assert [s.site_id for s in store.list_sites()] == ["county", "mercy", "university"]

    # -- runs ---------------------------------------------------------------------------

    @pytest.mark.parametrize("result", [None, BLOB_A])
    def test_run_round_trips_every_field(self, store: Store, result: BlobRef | None) -> None:
        run = _run(result=result, error="")
        store.create_run(run)
        assert store.get_run("run-1") == run
        assert store.list_runs() == [run]

    def test_a_runs_start_model_round_trips(self, store: Store) -> None:
        run = _run(start_model=BLOB_B, start_manifest=b"\x00signed manifest\xff")
        store.create_run(run)
        assert store.get_run("run-1") == run
        store.update_run("run-1", state=RunState.FAILED, error="lost")
        assert store.get_run("run-1").start_model == BLOB_B

    def test_creating_an_existing_run_conflicts(self, store: Store) -> None:
        store.create_run(_run())
        with pytest.raises(ConflictError) as info:
            store.create_run(_run(name="other"))
        assert info.value.run_id == "run-1"
        assert store.get_run("run-1") == _run()

    def test_unknown_run_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError) as info:
            store.get_run("nope")
        assert info.value.run_id == "nope"
        with pytest.raises(NotFoundError):
            store.update_run("nope", state=RunState.FAILED)
        with pytest.raises(NotFoundError):
            store.list_hops("nope")
        with pytest.raises(NotFoundError):
            store.add_hops("nope", _hops("nope", 0, 1))
        with pytest.raises(NotFoundError):
            store.append_event("nope", EventKind.RUN_CREATED, time_ms=1)
        with pytest.raises(NotFoundError):
            store.list_events("nope")

    def test_list_runs_is_newest_first_then_by_id(self, store: Store) -> None:
        for run_id, created in (("b", 5), ("a", 5), ("old", 1), ("new", 9), ("c", 5)):
            store.create_run(_run(run_id, created_ms=created))
        assert [r.run_id for r in store.list_runs()] == ["new", "a", "b", "c", "old"]

    @pytest.mark.parametrize("state", TERMINAL)
    def test_update_run_moves_running_to_a_terminal_state(
        self, store: Store, state: RunState
    ) -> None:
        store.create_run(_run())
        updated = store.update_run("run-1", state=state, error="why", result=BLOB_A)
        assert updated == _run(state=state, error="why", result=BLOB_A)
        assert store.get_run("run-1") == updated

    @pytest.mark.parametrize("first", TERMINAL)
    @pytest.mark.parametrize("second", TERMINAL)
    def test_update_of_a_terminal_run_conflicts(
        self, store: Store, first: RunState, second: RunState
    ) -> None:
        store.create_run(_run())
        done = store.update_run("run-1", state=first, error="first")
        with pytest.raises(ConflictError) as info:
            store.update_run("run-1", state=second, error="second", result=BLOB_A)
        assert info.value.run_id == "run-1"
        assert store.get_run("run-1") == done

    def test_update_to_running_conflicts(self, store: Store) -> None:
        store.create_run(_run())
        with pytest.raises(ConflictError):
            store.update_run("run-1", state=RunState.RUNNING, error="x")
        assert store.get_run("run-1") == _run()

    # -- hops ---------------------------------------------------------------------------

    def test_hops_round_trip_and_append_contiguously(self, store: Store) -> None:
        store.create_run(_run())
        first = _hops("run-1", 0, 2)
        store.add_hops("run-1", first)
        preset = HopRecord(
            run_id="run-1", hop_index=2, cycle=1, site_id="general", input=BLOB_A, error="e"
        )
        store.add_hops("run-1", [preset])
        store.add_hops("run-1", [])
        assert store.list_hops("run-1") == [*first, preset]
        assert store.get_hop("run-1", 2) == preset

    @pytest.mark.parametrize(
        ("existing", "indices"),
        [(0, [1]), (0, [0, 2]), (2, [1]), (2, [3]), (2, [2, 2]), (0, [-1])],
        ids=["first-not-0", "gap-in-batch", "rewrite", "gap", "duplicate", "negative"],
    )
    def test_non_contiguous_hops_conflict_and_add_nothing(
        self, store: Store, existing: int, indices: list[int]
    ) -> None:
        store.create_run(_run())
        store.add_hops("run-1", _hops("run-1", 0, existing))
        batch = [HopRecord(run_id="run-1", hop_index=i, cycle=0, site_id="x") for i in indices]
        with pytest.raises(ConflictError):
            store.add_hops("run-1", batch)
        assert store.list_hops("run-1") == _hops("run-1", 0, existing)

    def test_hops_of_another_run_or_not_pending_conflict(self, store: Store) -> None:
        store.create_run(_run("run-1"))
        store.create_run(_run("run-2"))
        with pytest.raises(ConflictError):
            store.add_hops("run-1", _hops("run-2", 0, 1))
        for state in (HopState.ASSIGNED, HopState.COMPLETED, HopState.FAILED):
            with pytest.raises(ConflictError):
                store.add_hops("run-1", [replace(_hops("run-1", 0, 1)[0], state=state)])
        assert store.list_hops("run-1") == []
        assert store.list_hops("run-2") == []

    @pytest.mark.parametrize("index", [-1, 4, 99])
    def test_unknown_hop_is_not_found(self, store: Store, run_with_hops: str, index: int) -> None:
        with pytest.raises(NotFoundError) as info:
            store.get_hop(run_with_hops, index)
        assert (info.value.run_id, info.value.hop) == (run_with_hops, index)
        with pytest.raises(NotFoundError):
            store.assign_hop(run_with_hops, index, input=None)
        with pytest.raises(NotFoundError):
            _complete(store, run_with_hops, index)
        with pytest.raises(NotFoundError):
            store.fail_hop(run_with_hops, index, error="x")
        with pytest.raises(NotFoundError):
            store.get_hop("other-run", 0)

    @pytest.mark.parametrize("input_ref", [None, BLOB_A])
    def test_assign_records_the_input(
        self, store: Store, run_with_hops: str, input_ref: BlobRef | None
    ) -> None:
        hop = store.assign_hop(run_with_hops, 1, input=input_ref)
        expected = replace(_hops(run_with_hops, 1, 1)[0], state=HopState.ASSIGNED, input=input_ref)
        assert hop == expected
        assert store.get_hop(run_with_hops, 1) == expected

    def test_complete_records_output_and_metrics(self, store: Store, run_with_hops: str) -> None:
        store.assign_hop(run_with_hops, 0, input=None)
        hop = _complete(store, run_with_hops, 0)
        assert hop.state is HopState.COMPLETED
        assert hop.output == BLOB_B
        assert hop.metrics_before == {"accuracy": 0.5, "loss": 0.1 + 0.2}
        assert hop.metrics_after == {"accuracy": 0.875, "loss": 1e-300, "grad_norm": math.inf}
        assert (hop.num_examples, hop.train_seconds) == (1500, 12.345678901234567)
        assert hop.output_manifest == b"\x00signed manifest\xff" * 40
        assert store.get_hop(run_with_hops, 0) == hop
        assert store.list_hops(run_with_hops)[0] == hop

    def test_nan_metrics_survive(self, store: Store, run_with_hops: str) -> None:
        store.assign_hop(run_with_hops, 0, input=None)
        _complete(store, run_with_hops, 0, metrics_after={"loss": math.nan})
        assert math.isnan(store.get_hop(run_with_hops, 0).metrics_after["loss"])

    def test_fail_records_the_error(self, store: Store, run_with_hops: str) -> None:
        hop = store.fail_hop(run_with_hops, 2, error="lease expired")
        assert hop == replace(
            _hops(run_with_hops, 2, 1)[0], state=HopState.FAILED, error="lease expired"
        )
        assert store.get_hop(run_with_hops, 2) == hop

    _OPERATIONS: ClassVar[dict[str, Callable[[Store, str], HopRecord]]] = {
        "assign": lambda s, r: s.assign_hop(r, 0, input=BLOB_A),
        "complete": lambda s, r: _complete(s, r, 0),
        "fail": lambda s, r: s.fail_hop(r, 0, error="boom"),
    }
    _REACH: ClassVar[dict[HopState, list[str]]] = {
        HopState.PENDING: [],
        HopState.ASSIGNED: ["assign"],
        HopState.COMPLETED: ["assign", "complete"],
        HopState.FAILED: ["fail"],
    }
    _ALLOWED: ClassVar[set[tuple[HopState, str]]] = {
        (HopState.PENDING, "assign"),
        (HopState.ASSIGNED, "complete"),
        (HopState.PENDING, "fail"),
        (HopState.ASSIGNED, "fail"),
    }
    _TARGET: ClassVar[dict[str, HopState]] = {
        "assign": HopState.ASSIGNED,
        "complete": HopState.COMPLETED,
        "fail": HopState.FAILED,
    }

    @pytest.mark.parametrize("start", list(HopState))
    @pytest.mark.parametrize("operation", ["assign", "complete", "fail"])
    def test_hop_transition_matrix(
        self, store: Store, run_with_hops: str, start: HopState, operation: str
    ) -> None:
        for step in self._REACH[start]:
            self._OPERATIONS[step](store, run_with_hops)
        before = store.get_hop(run_with_hops, 0)
        assert before.state is start
        if (start, operation) in self._ALLOWED:
            after = self._OPERATIONS[operation](store, run_with_hops)
            assert after.state is self._TARGET[operation]
            assert store.get_hop(run_with_hops, 0) == after
        else:
            with pytest.raises(ConflictError) as info:
                self._OPERATIONS[operation](store, run_with_hops)
            assert (info.value.run_id, info.value.hop) == (run_with_hops, 0)
            assert store.get_hop(run_with_hops, 0) == before

    def test_assigned_hops_for_site(self, store: Store) -> None:
        store.upsert_site(_site("mercy"))
        store.upsert_site(_site("idle"))
        for run_id, created in (("newer", 20), ("older", 10), ("z-same", 15), ("a-same", 15)):
            store.create_run(_run(run_id, created_ms=created))
            store.add_hops(run_id, _hops(run_id, 0, 3, "mercy"))
            store.assign_hop(run_id, 1, input=None)
        store.add_hops("older", _hops("older", 3, 1, "general"))
        store.assign_hop("older", 3, input=None)  # another site's hop
        store.assign_hop("newer", 0, input=None)
        store.fail_hop("z-same", 1, error="x")  # no longer assigned
        store.update_run("a-same", state=RunState.CANCELLED)  # run not running
        got = [(h.run_id, h.hop_index) for h in store.assigned_hops_for_site("mercy")]
        assert got == [("older", 1), ("newer", 0), ("newer", 1)]
        assert store.assigned_hops_for_site("idle") == []

    def test_reopen_hop_keeps_input_and_output_until_replaced(
        self, store: Store, run_with_hops: str
    ) -> None:
        store.assign_hop(run_with_hops, 0, input=BLOB_A)
        done = _complete(store, run_with_hops, 0)
        again = store.reopen_hop(run_with_hops, 0)
        assert again.state is HopState.ASSIGNED
        assert (again.input, again.output, again.output_manifest) == (
            BLOB_A,
            BLOB_B,
            done.output_manifest,
        )
        redone = _complete(store, run_with_hops, 0, output=BLOB_A, output_manifest=b"second")
        assert (redone.output, redone.output_manifest) == (BLOB_A, b"second")
        store.assign_hop(run_with_hops, 1, input=None)
        store.fail_hop(run_with_hops, 1, error="broke")
        assert store.reopen_hop(run_with_hops, 1).error == ""
        with pytest.raises(ConflictError, match=r"hop 2 .* is pending; it cannot be offered"):
            store.reopen_hop(run_with_hops, 2)

    def test_replan_hops_replaces_the_tail_and_the_hop_count(
        self, store: Store, run_with_hops: str
    ) -> None:
        store.assign_hop(run_with_hops, 0, input=None)
        _complete(store, run_with_hops, 0)
        store.assign_hop(run_with_hops, 1, input=None)
        tail = [
            HopRecord(run_id=run_with_hops, hop_index=1, cycle=0, site_id="general"),
            HopRecord(run_id=run_with_hops, hop_index=2, cycle=1, site_id="mercy"),
        ]
        store.replan_hops(run_with_hops, 1, tail, total_hops=3)
        assert [(h.hop_index, h.site_id, h.state) for h in store.list_hops(run_with_hops)] == [
            (0, "mercy", HopState.COMPLETED),
            (1, "general", HopState.PENDING),
            (2, "mercy", HopState.PENDING),
        ]
        assert store.get_run(run_with_hops).total_hops == 3
        with pytest.raises(ConflictError, match="completed hop 0 cannot be planned again"):
            store.replan_hops(run_with_hops, 0, [], total_hops=0)
        with pytest.raises(ConflictError, match="expects hop 1 next, not 2"):
            store.replan_hops(run_with_hops, 1, tail[1:], total_hops=2)
        assert store.get_run(run_with_hops).total_hops == 3

    # -- events -------------------------------------------------------------------------

    def test_events_are_numbered_per_run_without_gaps(self, store: Store) -> None:
        store.create_run(_run("run-1"))
        store.create_run(_run("run-2"))
        first = store.append_event(
            "run-1",
            EventKind.HOP_COMPLETED,
            time_ms=77,
            hop_index=3,
            site_id="mercy",
            message="done ✓",
            metrics={"loss": 0.25, "steps": 40},
        )
        assert first == EventRecord(
            run_id="run-1",
            seq=1,
            kind=EventKind.HOP_COMPLETED,
            time_ms=77,
            hop_index=3,
            site_id="mercy",
            message="done ✓",
            metrics={"loss": 0.25, "steps": 40.0},
        )
        assert type(first.metrics["steps"]) is float
        second = store.append_event("run-1", EventKind.HOP_PROGRESS, time_ms=78)
        other = store.append_event("run-2", EventKind.RUN_CREATED, time_ms=79)
        assert second == EventRecord(
            run_id="run-1", seq=2, kind=EventKind.HOP_PROGRESS, time_ms=78, metrics={}
        )
        assert (other.run_id, other.seq) == ("run-2", 1)
        assert store.list_events("run-1") == [first, second]
        assert store.list_events("run-1", after_seq=1) == [second]
        assert store.list_events("run-1", after_seq=2) == []
        assert store.list_events("run-2") == [other]

    def test_events_continue_after_the_run_ends(self, store: Store) -> None:
        store.create_run(_run())
        store.append_event("run-1", EventKind.RUN_CREATED, time_ms=1)
        store.update_run("run-1", state=RunState.SUCCEEDED, result=BLOB_A)
        event = store.append_event("run-1", EventKind.RUN_SUCCEEDED, time_ms=2)
        assert event.seq == 2
        assert [e.kind for e in store.list_events("run-1")] == [
            EventKind.RUN_CREATED,
            EventKind.RUN_SUCCEEDED,
        ]

    # -- snapshots ----------------------------------------------------------------------

    def test_records_are_snapshots(self, store: Store, run_with_hops: str) -> None:
        store.assign_hop(run_with_hops, 0, input=None)
        before: dict[str, float] = {"loss": 1.0}
        after: dict[str, float] = {"loss": 0.5}
        hop = _complete(store, run_with_hops, 0, metrics_before=before, metrics_after=after)
        before["loss"] = 99.0  # the caller's dicts change after the call
        hop.metrics_after["loss"] = 42.0  # a returned record is changed by its reader
        stored = store.get_hop(run_with_hops, 0)
        assert stored.metrics_before == {"loss": 1.0}
        assert stored.metrics_after == {"loss": 0.5}
        stored.metrics_before.clear()
        store.list_hops(run_with_hops)[0].metrics_after.clear()
        assert store.get_hop(run_with_hops, 0).metrics_before == {"loss": 1.0}
        assert store.get_hop(run_with_hops, 0).metrics_after == {"loss": 0.5}

        metrics: dict[str, float] = {"a": 1.0}
        event = store.append_event(
            run_with_hops, EventKind.HOP_PROGRESS, time_ms=1, metrics=metrics
        )
        metrics["a"] = 2.0
        event.metrics["b"] = 3.0
        store.list_events(run_with_hops)[0].metrics.clear()
        assert store.list_events(run_with_hops)[0].metrics == {"a": 1.0}

        old_run = store.get_run(run_with_hops)
        old_hop = store.get_hop(run_with_hops, 1)
        store.update_run(run_with_hops, state=RunState.FAILED, error="x")
        store.fail_hop(run_with_hops, 1, error="y")
        assert old_run.state is RunState.RUNNING
        assert old_hop.state is HopState.PENDING

    # -- concurrency and lifecycle ------------------------------------------------------

    def test_concurrent_appends_number_without_gaps(self, store: Store) -> None:
        store.create_run(_run())
        threads, per_thread = 8, 40
        seqs: dict[int, list[int]] = {t: [] for t in range(threads)}
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    event = store.append_event(
                        "run-1", EventKind.HOP_PROGRESS, time_ms=i, message=f"{t}:{i}"
                    )
                    seqs[t].append(event.seq)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        _in_threads(work, threads)
        assert errors == []
        everything = sorted(s for got in seqs.values() for s in got)
        assert everything == list(range(1, threads * per_thread + 1))
        for got in seqs.values():
            assert got == sorted(got)
        events = store.list_events("run-1")
        assert [e.seq for e in events] == everything
        by_seq = {e.seq: e.message for e in events}
        for t, got in seqs.items():
            assert [by_seq[s] for s in got] == [f"{t}:{i}" for i in range(per_thread)]

    def test_concurrent_assigns_let_exactly_one_win(self, store: Store, run_with_hops: str) -> None:
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def work(_: int) -> None:
            barrier.wait()
            try:
                store.assign_hop(run_with_hops, 0, input=BLOB_A)
                outcomes.append("won")
            except ConflictError:
                outcomes.append("conflict")

        _in_threads(work, 8)
        assert sorted(outcomes) == ["conflict"] * 7 + ["won"]

    def test_closed_store_refuses_calls(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        store.create_run(_run())
        store.close()
        store.close()  # idempotent
        with pytest.raises(StoreError):
            store.get_run("run-1")
        with pytest.raises(StoreError):
            store.list_sites()
        with pytest.raises(StoreError):
            store.create_run(_run("run-2"))


class TestMemoryStore(StoreContract):
    """The contract on ``MemoryStore``."""

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestSqliteStore(StoreContract):
    """The contract on ``SqliteStore``, plus what only a file can show."""

    def make_store(self, tmp_path: Path) -> Store:
        return SqliteStore(tmp_path / "state.db")
