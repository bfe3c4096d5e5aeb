"""``baton watch``: hop N of M from 1, the current site and step, bytes, ETA, then a summary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import Console

from baton.v1 import admin_pb2, common_pb2
from owner.watch import RunView, follow, human_bytes, human_seconds

PLAN = '[run]\nname = "w"\nsites = ["alpha", "beta"]\n[task]\ndataset = "wine"\n'
K = admin_pb2
T0 = 1_700_000_000_000
"""When the test run starts (Unix ms)."""


def _run(state: int = common_pb2.RUN_STATE_RUNNING) -> admin_pb2.Run:
    run = admin_pb2.Run(run_id="r1", name="w", total_hops=4, cycles=2, plan_toml=PLAN)
    run.state = state  # type: ignore[assignment]
    for i, site in enumerate(["alpha", "beta", "beta", "alpha"]):
        hop = run.hops.add(hop_index=i, cycle=i // 2, site_id=site)
        if i < 2:
            hop.output.size = 3 << 20
    return run


def _events() -> list[admin_pb2.RunEvent]:
    def ev(seq: int, kind: Any, t: float, hop: int = 0, site: str = "", **m: float) -> Any:
        e = admin_pb2.RunEvent(seq=seq, kind=kind, time_unix_ms=T0 + int(t * 1000), hop_index=hop)
        e.site_id = site
        e.metrics.update(m)
        return e

    progress = ev(3, K.EVENT_KIND_HOP_PROGRESS, 5, 0, "alpha", step=5, total_steps=10)
    progress.message = "progress"
    return [
        ev(1, K.EVENT_KIND_RUN_CREATED, 0),
        ev(2, K.EVENT_KIND_HOP_ASSIGNED, 0, 0, "alpha"),
        progress,
        ev(4, K.EVENT_KIND_HOP_COMPLETED, 10, 0, "alpha", before_accuracy=0.5, after_accuracy=0.8),
        ev(5, K.EVENT_KIND_HOP_ASSIGNED, 10, 1, "beta"),
    ]


def test_lines_and_headline_number_hops_and_cycles_from_one() -> None:
    view = RunView.of(_run(), "accuracy")
    lines = [view.apply(e) for e in _events()]
    assert lines[2] is None  # training progress moves the live view only
    assert lines[1] == "   2 hop_assigned   hop 1/4 cycle 1 alpha"
    assert lines[3] is not None
    assert lines[3].startswith("   4 hop_completed  hop 1/4 cycle 1 alpha")
    assert "after_accuracy=0.8" in lines[3]
    assert lines[4] == "   5 hop_assigned   hop 2/4 cycle 1 beta"
    # One hop took 10 s; 3 are left, the current one 5 s in: 25 s to go.
    assert view.eta_seconds(T0 + 15_000) == 25.0
    head = view.headline(T0 + 15_000)
    assert "hop 2 of 4 · cycle 1 of 2 · at beta" in head
    assert "relayed 3 MiB" in head
    assert head.endswith("ETA 25s")


def test_eta_before_the_first_hop_completes_comes_from_training_steps() -> None:
    view = RunView.of(_run(), "accuracy")
    for e in _events()[:3]:
        view.apply(e)
    # 5 of 10 steps in 5 s: a hop takes 10 s; 4 hops left, 5 s of this one spent.
    assert view.eta_seconds(T0 + 5_000) == 35.0
    assert "progress 5/10" in view.headline(T0 + 5_000)
    assert RunView.of(_run(), "accuracy").eta_seconds(T0 + 0) is None


def test_table_shows_the_primary_metric_seconds_and_bytes() -> None:
    view = RunView.of(_run(), "accuracy")
    for e in _events():
        view.apply(e)
    console = Console(width=200, no_color=True, record=True)
    console.print(view.table())
    out = console.export_text()
    row = next(line for line in out.splitlines() if "completed" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["1", "1", "alpha", "completed", "0.500", "0.800", "10.0", "3 MiB"]
    console.print(view)  # the live view: headline, progress bar, latest hops
    live = console.export_text()
    assert live.splitlines()[0].startswith("run r1 · hop 2 of 4 · cycle 1 of 2 · at beta")
    assert "1/4 hops" in live.splitlines()[1]
    assert "│ 2   │ 1     │ beta  │ running" in live


class FakeClient:
    """The two calls ``follow`` makes, over a finished run."""

    def __init__(self) -> None:
        self.gets = 0

    def get_run(self, run_id: str) -> admin_pb2.Run:
        self.gets += 1
        return _run(common_pb2.RUN_STATE_SUCCEEDED)

    def watch(self, run_id: str) -> Iterator[admin_pb2.RunEvent]:
        events = _events()
        end = admin_pb2.RunEvent(seq=6, kind=K.EVENT_KIND_RUN_SUCCEEDED, time_unix_ms=T0 + 20_000)
        end.message = "every hop completed"
        done = admin_pb2.RunEvent(
            seq=6, kind=K.EVENT_KIND_HOP_COMPLETED, time_unix_ms=T0 + 20_000, hop_index=1
        )
        done.metrics["after_accuracy"] = 0.9
        yield from [*events, done, end]


def test_follow_prints_plain_lines_off_a_terminal_and_ends_with_the_summary() -> None:
    console = Console(width=200, no_color=True, record=True, force_terminal=False)
    client = FakeClient()
    final, _ = follow(client, "r1", console)  # type: ignore[arg-type]
    out = console.export_text().splitlines()
    assert final.state == common_pb2.RUN_STATE_SUCCEEDED
    assert not any("progress" in line for line in out)
    assert out[-2].startswith("   6 run_succeeded  every hop completed")
    assert out[-1] == (
        "run r1 succeeded: 2 of 4 hops in 20s, 6 MiB relayed, final val accuracy 0.900 at beta"
    )
    # It asks for the run at the start, after each assignment and completion, and at the end.
    assert client.gets == 1 + 4 + 1


def test_human_units() -> None:
    assert [human_bytes(n) for n in (512, 1536, 5 << 30)] == ["512 B", "1.5 KiB", "5 GiB"]
    assert [human_seconds(s) for s in (12.4, 185, 3720)] == ["12s", "3m05s", "1h02m"]
