"""What a site is told to do: its assignments, each naming who receives the hop's output.

The recipient comes from hops already planned (see :mod:`coordinator.engine.planning`);
building an assignment never plans. A recipient with a revoked certificate is refused
when the assignment is built, so no site seals a model to it: the hop is held back from
its site's stream (which stays open and quiet) until the run's fault policy replaces the
recipient (:class:`coordinator.engine.leases.HopWatch`) or the recipient is certified again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from baton.domain import Assignment, BlobRef, Evaluator, NextHop
from baton.errors import ConflictError
from baton.plan import parse_plan
from coordinator.engine.cutthrough import CutThrough
from coordinator.engine.evaluations import Evaluations
from coordinator.store.base import HopRecord, RunRecord, Store


class Assignments:
    """Builds domain :class:`~baton.domain.Assignment` s from the stored plan and hops.

    Args:
        store: Durable state.
        evaluations: Which finished runs await a site's evaluation.
        revoked: Whether a certificate (PEM) is revoked; a site or study owner holding
            one is never named as a recipient.
    """

    def __init__(
        self,
        store: Store,
        evaluations: Evaluations,
        *,
        revoked: Callable[[bytes], bool] = lambda cert_pem: False,
    ) -> None:
        self._store = store
        self._evaluations = evaluations
        self._revoked = revoked
        self._offers: dict[tuple[str, int], int] = {}
        self.early: CutThrough | None = None
        """Offers hops early while the hop before uploads (None: never)."""

    def reoffer(self, run_id: str, hop_index: int) -> None:
        """Has every assignment stream send hop ``hop_index`` again (a retry, or a re-seal
        for a new recipient), even one that sent it before."""
        key = (run_id, hop_index)
        self._offers[key] = self._offers.get(key, 0) + 1

    def for_site(self, site_id: str, sent: set[tuple[str, int, int]]) -> Iterator[Assignment]:
        """The site's hops in flight and its pending evaluations, except those in ``sent``;
        adds what it yields to ``sent``, keyed (run id, hop index, times offered again).

        A hop whose recipient holds a revoked certificate (or is not planned yet) is held
        back, not sent: it is yielded on a later call once its recipient is replaced, so
        the site's stream stays open and one run does not hold up others.
        """
        for hop in self._store.assigned_hops_for_site(site_id):
            key = (hop.run_id, hop.hop_index, self._offers.get((hop.run_id, hop.hop_index), 0))
            if key in sent:
                continue
            try:
                assignment = self.for_hop(hop)
            except ConflictError:
                continue  # held back: the fault policy meets a revoked recipient
            sent.add(key)
            yield assignment
        for early in self.early.early_for_site(site_id) if self.early else ():
            hop = early.hop
            key = (hop.run_id, hop.hop_index, self._offers.get((hop.run_id, hop.hop_index), 0))
            if key in sent:
                continue
            try:
                assignment = self.for_hop(hop, input_manifest=early.input_manifest)
            except ConflictError:
                continue  # not offered early; offered once assigned (or refused then)
            sent.add(key)
            yield assignment
        for run in self._evaluations.pending(site_id):
            if (run.run_id, run.total_hops, -1) not in sent:
                sent.add((run.run_id, run.total_hops, -1))
                yield self.for_evaluation(run)

    def for_hop(self, hop: HopRecord, *, input_manifest: bytes = b"") -> Assignment:
        """The assignment of ``hop``, naming who receives its output; ``input_manifest``
        seals ``hop.input`` when the hop before is not completed yet (an early offer).

        Raises:
            ConflictError: the recipient holds a revoked certificate, or is not planned.
        """
        run = self._store.get_run(hop.run_id)
        return self._offer(
            run,
            hop_index=hop.hop_index,
            cycle=hop.cycle,
            model=hop.input,
            next_hop=self.next_hop(run, hop.hop_index),
            input_manifest=input_manifest,
        )

    def for_evaluation(self, run: RunRecord) -> Assignment:
        """The assignment to evaluate ``run``'s final model: the owner's hop, as it were."""
        last = self._store.get_hop(run.run_id, run.total_hops - 1)
        return self._offer(
            run,
            hop_index=run.total_hops,
            cycle=last.cycle,
            model=run.result,
            evaluate_only=True,
        )

    def next_hop(self, run: RunRecord, hop_index: int) -> NextHop:
        """Who receives the output of ``hop_index``: the next hop's site, or the study owner.

        Raises:
            ConflictError: the recipient holds a revoked certificate, or the next hop is not
                planned yet.
        """
        nxt = hop_index + 1
        if nxt >= run.total_hops:
            if self._any_revoked(
                run.owner_signing_certificate_pem, run.owner_encryption_certificate_pem
            ):
                raise ConflictError(
                    f"the study owner of run {run.run_id} has a revoked certificate",
                    run_id=run.run_id,
                )
            return NextHop(
                final=True,
                hop_index=run.total_hops,
                signing_certificate_pem=run.owner_signing_certificate_pem,
                encryption_certificate_pem=run.owner_encryption_certificate_pem,
                evaluators=self._evaluators(run),
            )
        if nxt >= len(self._store.list_hops(run.run_id)):
            raise ConflictError(
                f"hop {nxt + 1} of run {run.run_id} is not planned yet", run_id=run.run_id, hop=nxt
            )
        hop = self._store.get_hop(run.run_id, nxt)
        site = self._store.get_site(hop.site_id)
        if self._any_revoked(
            site.certificate_pem, site.signing_certificate_pem, site.encryption_certificate_pem
        ):
            raise ConflictError(
                f"the next site {hop.site_id} has a revoked certificate", site_id=hop.site_id
            )
        return NextHop(
            final=False,
            site_id=hop.site_id,
            hop_index=nxt,
            certificate_pem=site.certificate_pem,
            signing_certificate_pem=site.signing_certificate_pem,
            encryption_certificate_pem=site.encryption_certificate_pem,
        )

    def _evaluators(self, run: RunRecord) -> tuple[Evaluator, ...]:
        """Every site of the plan, when it asks them to evaluate the final model; a revoked
        site gets no copy of the final model."""
        if not parse_plan(run.plan_toml, source="run plan").run.evaluate_at_sites:
            return ()
        sites = [self._store.get_site(site_id) for site_id in run.sites]
        return tuple(
            Evaluator(
                site_id=s.site_id,
                signing_certificate_pem=s.signing_certificate_pem,
                encryption_certificate_pem=s.encryption_certificate_pem,
            )
            for s in sites
            if not self._any_revoked(
                s.certificate_pem, s.signing_certificate_pem, s.encryption_certificate_pem
            )
        )

    def _offer(
        self,
        run: RunRecord,
        *,
        hop_index: int,
        cycle: int,
        model: BlobRef | None,
        next_hop: NextHop | None = None,
        evaluate_only: bool = False,
        input_manifest: bytes = b"",
    ) -> Assignment:
        """An assignment for ``hop_index`` of ``run``, whose input ``model`` the hop before
        sealed (with that hop's sender and the manifest before it, to check the chain)."""
        previous_site_id = sender_signing = sender_encryption = ""
        previous_manifest = b""
        if hop_index:
            prev = self._store.get_hop(run.run_id, hop_index - 1)
            sender = self._store.get_site(prev.site_id)
            previous_site_id = prev.site_id
            input_manifest = input_manifest or prev.output_manifest
            sender_signing = sender.signing_certificate_pem
            sender_encryption = sender.encryption_certificate_pem
        elif run.start_model is not None and not evaluate_only:
            # Hop 0 from the owner's start model, sealed by the owner to the plan's sites.
            model, input_manifest = model or run.start_model, run.start_manifest
            sender_signing = run.owner_signing_certificate_pem
            sender_encryption = run.owner_encryption_certificate_pem
        if hop_index >= 2:
            previous_manifest = self._store.get_hop(run.run_id, hop_index - 2).output_manifest
        return Assignment(
            run_id=run.run_id,
            hop_index=hop_index,
            cycle=cycle,
            total_hops=run.total_hops,
            plan_toml=run.plan_toml,
            plan_signature=run.plan_signature,
            owner_signing_certificate_pem=run.owner_signing_certificate_pem,
            owner_encryption_certificate_pem=run.owner_encryption_certificate_pem,
            input=model,
            previous_site_id=previous_site_id,
            input_manifest=input_manifest,
            previous_manifest=previous_manifest,
            sender_signing_certificate_pem=sender_signing,
            sender_encryption_certificate_pem=sender_encryption,
            evaluate_only=evaluate_only,
            next_hop=next_hop,
        )

    def _any_revoked(self, *pems: str) -> bool:
        return any(pem and self._revoked(pem.encode()) for pem in pems)
