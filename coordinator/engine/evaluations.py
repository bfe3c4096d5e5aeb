"""Evaluations of a finished run's final model, when its plan asks every site for one."""

from __future__ import annotations

from baton.errors import ConflictError
from baton.plan import parse_plan
from coordinator.engine.journal import Journal
from coordinator.store.base import EventKind, RunRecord, RunState, Store


class Evaluations:
    """Which sites owe an evaluation of which finished run, and their reports.

    Args:
        store: Durable state.
        journal: Where reports are recorded.
    """

    def __init__(self, store: Store, journal: Journal) -> None:
        self._store = store
        self._journal = journal
        # Runs whose evaluations need no more looking at: their plan asks for none, or
        # every site has reported. Plans never change, and neither do reports.
        self._settled: set[str] = set()
        # Succeeded runs not settled yet: read once from the store, then told by the
        # scheduler, so an assignment stream's poll never reads every finished run.
        self._candidates: set[str] | None = None

    def prime(self) -> None:
        """Reads, once at start-up, which succeeded runs may still await evaluations (and
        settles the rest), so no stream's first poll pays for every finished run."""
        with self._journal.lock:
            self._candidates = {
                r.run_id for r in self._store.list_runs() if r.state is RunState.SUCCEEDED
            }
            for run_id in sorted(self._candidates - self._settled):
                self.expects("", self._store.get_run(run_id))
            self._candidates -= self._settled

    def succeeded(self, run_id: str) -> None:
        """Notes a run that has just succeeded (it may await evaluations)."""
        with self._journal.lock:
            if self._candidates is not None:
                self._candidates.add(run_id)

    def pending(self, site_id: str) -> list[RunRecord]:
        """Finished runs whose plan asks every site to evaluate the final model and that
        ``site_id`` has not evaluated yet, newest first."""
        with self._journal.lock:
            if self._candidates is None:
                self.prime()
            assert self._candidates is not None
            self._candidates -= self._settled
            runs = [self._store.get_run(run_id) for run_id in self._candidates]
        runs.sort(key=lambda r: (-r.created_ms, r.run_id))
        return [run for run in runs if self.expects(site_id, run)]

    def expects(self, site_id: str, run: RunRecord) -> bool:
        """Whether ``run`` has ended and awaits ``site_id``'s evaluation of its final model."""
        if run.state is not RunState.SUCCEEDED or run.run_id in self._settled:
            return False
        if not parse_plan(run.plan_toml, source="run plan").run.evaluate_at_sites:
            self._settled.add(run.run_id)
            return False
        reported = {
            e.site_id
            for e in self._store.list_events(run.run_id)
            if e.kind is EventKind.SITE_EVALUATED
        }
        if reported >= set(run.sites):
            self._settled.add(run.run_id)
        return site_id in run.sites and site_id not in reported

    def record(self, site_id: str, run_id: str, metrics: dict[str, float]) -> None:
        """Records a site's evaluation of a finished run's final model.

        Raises:
            NotFoundError: The run does not exist.
            ConflictError: The run did not ask ``site_id`` for an evaluation, or it has
                one from that site already.
        """
        with self._journal.transaction():
            run = self._store.get_run(run_id)
            if not self.expects(site_id, run):
                raise ConflictError(
                    f"run {run_id} expects no evaluation from site {site_id}", run_id=run_id
                )
            self._journal.event(
                run_id,
                EventKind.SITE_EVALUATED,
                hop_index=run.total_hops,
                site_id=site_id,
                message="evaluation",
                metrics=metrics,
            )
            self._journal.record("site_evaluated", run_id, detail={"site": site_id})
