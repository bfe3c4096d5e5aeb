"""Three sites and a study owner with real keys, a tiny task and plan, and the in-memory
coordinator client: what the hop unit tests build on."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baton.domain import Assignment, Evaluator, NextHop
from baton.ml.codec import load_state_file
from baton.ml.data import Schema, SiteData, Split
from baton.ml.task import TABULAR, Task
from baton.security.audit import AuditLog
from baton.security.envelope import Expectation, open_file
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import manifest_digest, plan_hash
from site_node.client import HopDone
from site_node.fake_client import FakeCoordinatorClient
from site_node.hop import HopRunner, LocalData
from tests.conftest import Pki

RUN = "run-1"
SCHEMA = Schema(
    task="toy",
    feature_names=("f0", "f1", "f2", "f3"),
    num_classes=2,
    class_names=("no", "yes"),
)
PLAN = """
[run]
name = "unit"
sites = ["site-a", "site-b", "site-c"]
{run}

[model]
name = "logreg"

[task]
dataset = "{task}"

[ordering]
strategy = "fixed"

[training]
local_steps = 4
batch_size = 16
"""


def plan(*, task: str = "toy", run: str = "") -> str:
    return PLAN.format(task=task, run=run)


def split(rng: np.random.Generator, n: int) -> Split:
    x = rng.normal(size=(n, len(SCHEMA.feature_names))).astype(np.float32)
    return Split(x=x, y=(x[:, 0] + x[:, 1] > 0).astype(np.int64))


def data(seed: int) -> SiteData:
    rng = np.random.default_rng(seed)
    return SiteData(train=split(rng, 48), val=split(rng, 16))


@dataclass
class World:
    """Three sites and a study owner with real keys, each site with its own data and log."""

    pki: Pki
    tmp: Path
    logs: dict[str, AuditLog]
    guards: dict[str, MemoryReplayGuard]

    def signed(self, text: str) -> Assignment:
        """Hop 0 of a two-hop run of ``text``, signed by the owner, to site-a."""
        plan = self.pki.signed_plan(text)
        return Assignment(
            run_id=RUN,
            hop_index=0,
            cycle=0,
            total_hops=2,
            plan_toml=text,
            plan_signature=plan.signature,
            owner_signing_certificate_pem=plan.owner_signing_pem,
            owner_encryption_certificate_pem=plan.owner_encryption_pem,
            next_hop=self.site("site-b", 1),
        )

    def site(self, name: str, hop: int) -> NextHop:
        keys = self.pki.keys(name)
        return NextHop(
            final=False,
            site_id=name,
            hop_index=hop,
            signing_certificate_pem=keys.signing_cert_pem.decode(),
            encryption_certificate_pem=keys.encryption_cert_pem.decode(),
        )

    def owner(self, hop: int, *evaluators: str) -> NextHop:
        keys = self.pki.keys("owner")
        return NextHop(
            final=True,
            hop_index=hop,
            signing_certificate_pem=keys.signing_cert_pem.decode(),
            encryption_certificate_pem=keys.encryption_cert_pem.decode(),
            evaluators=tuple(
                Evaluator(
                    site_id=e,
                    signing_certificate_pem=self.pki.keys(e).signing_cert_pem.decode(),
                    encryption_certificate_pem=self.pki.keys(e).encryption_cert_pem.decode(),
                )
                for e in evaluators
            ),
        )

    def after(
        self, a: Assignment, done: HopDone, *, sender: str, nxt: NextHop | None
    ) -> Assignment:
        """The assignment of the hop after ``a``, whose input is ``done``'s output."""
        keys = self.pki.keys(sender)
        return replace(
            a,
            hop_index=a.hop_index + 1,
            input=done.output,
            previous_site_id=sender,
            input_manifest=done.output_manifest,
            previous_manifest=a.input_manifest,
            sender_signing_certificate_pem=keys.signing_cert_pem.decode(),
            sender_encryption_certificate_pem=keys.encryption_cert_pem.decode(),
            next_hop=nxt,
        )

    def runner(
        self,
        site: str,
        client: FakeCoordinatorClient,
        revoked: Callable[[bytes | str], bool] | None = None,
        schema: Schema = SCHEMA,
        task: Task = TABULAR,
    ) -> HopRunner:
        if site not in self.logs:
            self.logs[site] = AuditLog(
                self.tmp / f"{site}.audit.jsonl",
                party=self.pki.identity(site).spiffe_id,
                signing_key=self.pki.keys(site).signing_key,
            )
        return HopRunner(
            client,
            tls=self.pki.material(site),
            keys=self.pki.keys(site),
            local=LocalData(schema=schema, data=data(ord(site[-1])), task=task),
            work_dir=self.tmp / site,
            replay=self.guards.setdefault(site, MemoryReplayGuard()),
            audit=self.logs[site],
            revoked=revoked or (lambda pem: False),
        )

    def events(self, site: str) -> list[dict[str, Any]]:
        lines = (self.tmp / f"{site}.audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def opened(
        self, client: FakeCoordinatorClient, a: Assignment, done: HopDone, *, me: str, sender: str
    ) -> dict[str, torch.Tensor]:
        """What ``me`` reads in hop ``a``'s output, checked as the next party checks it."""
        sealed = self.tmp / f"{me}-{a.hop_index}.sealed"
        sealed.write_bytes(client.blobs[done.output.blob_id])
        digest = plan_hash(a.plan_toml, a.plan_signature)
        open_file(
            sealed,
            self.tmp / f"{me}-{a.hop_index}.safetensors",
            done.output_manifest,
            me=self.pki.identity(me).spiffe_id,
            my_key=self.pki.keys(me).encryption_key,
            expect=Expectation(
                run_id=RUN,
                hop_index=a.hop_index,
                sender=self.pki.identity(sender).spiffe_id,
                previous_manifest_hash=manifest_digest(a.input_manifest)
                if a.input_manifest
                else digest,
                plan_hash=digest,
                max_plaintext_bytes=1 << 20,
            ),
            sender_key=self.pki.keys(sender).signing_key.public_key(),
            replay=MemoryReplayGuard(),
        )
        return load_state_file(self.tmp / f"{me}-{a.hop_index}.safetensors")


@contextmanager
def new_world(pki: Pki, tmp_path: Path) -> Iterator[World]:
    """A world whose audit logs are closed at the end."""
    w = World(pki=pki, tmp=tmp_path, logs={}, guards={})
    try:
        yield w
    finally:
        for log in w.logs.values():
            log.close()


def hop0(world: World, text: str | None = None) -> tuple[Assignment, FakeCoordinatorClient]:
    """site-a trains hop 0 and seals it to site-b."""
    a = world.signed(text or plan())
    client = FakeCoordinatorClient()
    assert world.runner("site-a", client).run(a)
    return a, client


def hop1(
    world: World, nxt: NextHop | None = None, *, text: str | None = None
) -> tuple[Assignment, Assignment, FakeCoordinatorClient]:
    """Hop 0 done by site-a, and hop 1 as site-b is assigned it; the fake serves its input."""
    a0, c0 = hop0(world, text)
    client = FakeCoordinatorClient()
    client.blobs.update(c0.blobs)
    a1 = world.after(a0, c0.completed[0], sender="site-a", nxt=nxt or world.owner(2))
    return a0, a1, client


def input_of(a: Assignment) -> HopDone:
    """The output of the hop before ``a``, as ``a`` names it."""
    assert a.input is not None
    return HopDone(
        run_id=RUN, hop_index=a.hop_index - 1, output=a.input, output_manifest=a.input_manifest
    )


def methods(client: FakeCoordinatorClient) -> list[str]:
    """The calls made, without the progress reports."""
    return [c.method for c in client.calls if c.args.get("stage") != "progress"]


def leftovers(world: World, site: str, pattern: str) -> list[Path]:
    return sorted((world.tmp / site).rglob(pattern))
