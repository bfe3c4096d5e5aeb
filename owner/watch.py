"""The live view of a run as ``baton watch`` shows it: hop N of M, site, bytes, metrics, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from baton.v1 import admin_pb2
from owner.tables import fmt

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from owner.client import AdminClient

RECENT_HOPS = 8
"""Hops the live table shows: the latest ones, the current one included."""

_REFRESH_KINDS = frozenset({admin_pb2.EVENT_KIND_HOP_ASSIGNED, admin_pb2.EVENT_KIND_HOP_COMPLETED})
"""Events after which the view asks for the run again (new hops, blob sizes)."""


def follow(client: AdminClient, run_id: str, console: Console) -> tuple[admin_pb2.Run, RunView]:
    """Follows a run until it ends: a live view on a terminal, one line per event (training
    progress left out) otherwise; then the one-line summary. Returns the run as it ended.
    """
    from rich.live import Live

    from owner.tables import primary_metric

    run = client.get_run(run_id)
    view = RunView.of(run, primary_metric(run.plan_toml))
    if console.is_terminal:
        with Live(view, console=console, refresh_per_second=4, transient=True):
            for ev in client.watch(run_id):
                view.apply(ev)
                if ev.kind in _REFRESH_KINDS:
                    view.refresh(client.get_run(run_id))
        console.print(view.table(rows=RECENT_HOPS))
    else:
        for ev in client.watch(run_id):
            line = view.apply(ev)
            if ev.kind in _REFRESH_KINDS:
                view.refresh(client.get_run(run_id))
            if line is not None:
                console.print(line, markup=False)
    final = client.get_run(run_id)
    view.refresh(final)
    console.print(view.summary(), markup=False)
    return final, view


@dataclass
class HopView:
    """What the owner sees of one hop (``index`` and ``cycle`` from 0, shown from 1)."""

    index: int
    cycle: int
    site: str
    state: str = "planned"
    started_ms: int = 0
    ended_ms: int = 0
    step: int = 0
    total_steps: int = 0
    before: float | None = None
    after: float | None = None
    in_bytes: int = 0
    out_bytes: int = 0

    @property
    def seconds(self) -> float | None:
        """Wall seconds from assignment to completion; None while it has not ended."""
        if not (self.started_ms and self.ended_ms):
            return None
        return (self.ended_ms - self.started_ms) / 1000


@dataclass
class RunView:
    """A run folded from its events and, now and then, the run itself.

    Args:
        run_id: The run.
        metric: The plan's primary metric, shown before and after each hop.
        total_hops: Hops the run has in all.
        cycles: Training cycles of the run.
    """

    run_id: str
    metric: str
    total_hops: int
    cycles: int
    name: str = ""
    stage: str = ""
    hops: dict[int, HopView] = field(default_factory=dict)
    outcome: str = ""

    @classmethod
    def of(cls, run: admin_pb2.Run, metric: str) -> RunView:
        """The view of ``run`` as the coordinator sees it now."""
        view = cls(run.run_id, metric, run.total_hops, run.cycles, name=run.name)
        view.refresh(run)
        return view

    def refresh(self, run: admin_pb2.Run) -> None:
        """Takes each hop's site, cycle, blob sizes and metrics from ``run``."""
        for h in run.hops:
            hop = self._hop(h.hop_index, h.cycle, h.site_id)
            hop.cycle, hop.site = h.cycle, h.site_id
            hop.in_bytes, hop.out_bytes = h.input.size, h.output.size
            hop.before = h.metrics_before.get(self.metric, hop.before)
            hop.after = h.metrics_after.get(self.metric, hop.after)

    def apply(self, ev: admin_pb2.RunEvent) -> str | None:
        """Folds one event in; returns the plain line a person reads for it (None for
        training progress, which only moves the live view)."""
        kind = admin_pb2.EventKind.Name(ev.kind).removeprefix("EVENT_KIND_").lower()
        hop = self.hops.get(ev.hop_index)
        if ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED:
            hop = self._hop(ev.hop_index, hop.cycle if hop else 0, ev.site_id)
            hop.state, hop.started_ms, hop.site = "running", ev.time_unix_ms, ev.site_id
            self.stage = "transfer"
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS and hop is not None:
            self.stage = ev.message
            hop.step = int(ev.metrics.get("step", hop.step))
            hop.total_steps = int(ev.metrics.get("total_steps", hop.total_steps))
            if ev.message == "before":
                hop.before = ev.metrics.get(self.metric, hop.before)
            return None
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_PROGRESS:
            return None
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_COMPLETED and hop is not None:
            hop.state, hop.ended_ms = "completed", ev.time_unix_ms
            hop.before = ev.metrics.get(f"before_{self.metric}", hop.before)
            hop.after = ev.metrics.get(f"after_{self.metric}", hop.after)
            hop.step = hop.total_steps or hop.step
        elif ev.kind == admin_pb2.EVENT_KIND_HOP_FAILED and hop is not None:
            hop.state, hop.ended_ms = "failed", ev.time_unix_ms
        elif ev.kind in _ENDINGS:
            self.outcome = kind.removeprefix("run_")
        return self._line(ev, kind)

    def _hop(self, index: int, cycle: int, site: str) -> HopView:
        if index not in self.hops:
            self.hops[index] = HopView(index=index, cycle=cycle, site=site)
        return self.hops[index]

    def _line(self, ev: admin_pb2.RunEvent, kind: str) -> str:
        where = ""
        hop = self.hops.get(ev.hop_index)
        if hop is not None and ev.kind not in _RUN_KINDS:
            where = f"hop {hop.index + 1}/{self.total_hops} cycle {hop.cycle + 1} {hop.site}"
        message = "" if ev.kind == admin_pb2.EVENT_KIND_HOP_ASSIGNED else ev.message
        extra = " ".join(f"{k}={v:.4g}" for k, v in sorted(ev.metrics.items()))
        return " ".join(p for p in (f"{ev.seq:>4} {kind:<14}", where, message, extra) if p)

    # -- figures ----------------------------------------------------------------------

    @property
    def completed(self) -> int:
        """Hops completed so far."""
        return sum(h.state == "completed" for h in self.hops.values())

    @property
    def current(self) -> HopView | None:
        """The hop in progress, if one is."""
        busy = [h for h in self.hops.values() if h.state == "running"]
        return busy[-1] if busy else None

    @property
    def relayed_bytes(self) -> int:
        """Sealed bytes sites uploaded so far (each is also downloaded once, by the next)."""
        return sum(h.out_bytes for h in self.hops.values() if h.state == "completed")

    def eta_seconds(self, now_ms: int) -> float | None:
        """Seconds left at the pace of the hops completed so far (or, before the first one
        completes, of the current hop's training steps); None while there is no pace yet."""
        done = [s for h in self.hops.values() if (s := h.seconds) is not None]
        left = self.total_hops - self.completed
        cur = self.current
        elapsed = (now_ms - cur.started_ms) / 1000 if cur and cur.started_ms else 0.0
        if done:
            per_hop = sum(done) / len(done)
        elif cur and cur.step and cur.total_steps:
            per_hop = elapsed * cur.total_steps / cur.step
        else:
            return None
        return max(0.0, per_hop * left - min(elapsed, per_hop))

    # -- rendering --------------------------------------------------------------------

    def headline(self, now_ms: int) -> str:
        """One line: hop N of M, cycle, site, stage and step, bytes, ETA."""
        cur = self.current
        parts = [f"run {self.run_id}"]
        if cur is not None:
            parts.append(f"hop {cur.index + 1} of {self.total_hops}")
            parts.append(f"cycle {cur.cycle + 1} of {self.cycles}")
            parts.append(f"at {cur.site}")
            if self.stage:
                steps = f" {cur.step}/{cur.total_steps}" if cur.total_steps else ""
                parts.append(f"{self.stage}{steps}")
            if cur.in_bytes:
                parts.append(f"model in {human_bytes(cur.in_bytes)}")
        else:
            parts.append(f"{self.completed} of {self.total_hops} hops")
        parts.append(f"relayed {human_bytes(self.relayed_bytes)}")
        eta = self.eta_seconds(now_ms)
        if eta is not None and not self.outcome:
            parts.append(f"ETA {human_seconds(eta)}")
        return " · ".join(parts)

    def table(self, rows: int | None = RECENT_HOPS) -> Table:
        """The hops (the latest ``rows`` of them; all with None), 1-based."""
        table = Table(
            "hop", "cycle", "site", "state", f"{self.metric} before", f"{self.metric} after",
            "seconds", "bytes out",
        )  # fmt: skip
        shown = sorted(self.hops.values(), key=lambda h: h.index)
        for h in shown if rows is None else [h for h in shown if h.state != "planned"][-rows:]:
            table.add_row(
                str(h.index + 1),
                str(h.cycle + 1),
                h.site,
                h.state,
                fmt(h.before),
                fmt(h.after),
                "" if h.seconds is None else f"{h.seconds:.1f}",
                human_bytes(h.out_bytes) if h.out_bytes else "",
            )
        return table

    def __rich__(self) -> RenderableType:
        now_ms = int(time.time() * 1000)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(self.total_hops, 1), completed=self.completed, width=40),
            f"{self.completed}/{self.total_hops} hops",
        )
        return Group(Text(self.headline(now_ms)), bar, self.table())

    def summary(self) -> str:
        """How the run ended, in one line: state, hops, time, bytes and the final metric."""
        ended = [h for h in self.hops.values() if h.ended_ms]
        started = [h.started_ms for h in self.hops.values() if h.started_ms]
        spent = (max(h.ended_ms for h in ended) - min(started)) / 1000 if ended and started else 0
        last = max((h for h in self.hops.values() if h.after is not None), default=None,
                   key=lambda h: h.index)  # fmt: skip
        final = f", final val {self.metric} {fmt(last.after)} at {last.site}" if last else ""
        return (
            f"run {self.run_id} {self.outcome or 'ended'}: {self.completed} of "
            f"{self.total_hops} hops in {human_seconds(spent)}, "
            f"{human_bytes(self.relayed_bytes)} relayed{final}"
        )


_ENDINGS = frozenset(
    {
        admin_pb2.EVENT_KIND_RUN_SUCCEEDED,
        admin_pb2.EVENT_KIND_RUN_FAILED,
        admin_pb2.EVENT_KIND_RUN_CANCELLED,
    }
)
_RUN_KINDS = _ENDINGS | {admin_pb2.EVENT_KIND_RUN_CREATED}


def human_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB or GiB, to 3 significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    """``s`` seconds as ``1h02m``, ``3m05s`` or ``12s``."""
    whole = round(s)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"
