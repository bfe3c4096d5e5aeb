"""What sites and the study owner do on the wire, for tests that play them live."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from baton.domain import Assignment, BlobRef
from baton.security.audit import AuditLog, verify_log
from baton.security.envelope import Expectation, HopContext, RecipientKey, open_file, seal_file
from baton.security.replay import MemoryReplayGuard
from baton.security.sealing import plan_hash
from baton.v1 import admin_pb2, common_pb2, site_pb2, site_pb2_grpc
from baton.wire.serde import assignment_from_proto
from sim.tasks import Partition, make_federation
from site_node import transfer
from site_node.client import GrpcCoordinatorClient
from site_node.config import SiteTraining
from site_node.hop import HopRunner, LocalData
from tests.conftest import LiveCoordinator, Pki

PLAN = """
[run]
name = "grpc-test"
sites = [{sites}]
cycles = {cycles}

[model]
name = "logreg"

[task]
dataset = "breast_cancer"

[ordering]
strategy = "fixed"
"""


PROFILE = common_pb2.DataProfile(
    num_examples=10, label_histogram=[5, 5], schema_hash="0" * 64, task="breast_cancer"
)
"""What every test site publishes: data of the plans' task, all with one schema."""


def plan(sites: list[str], cycles: int = 1) -> str:
    return PLAN.format(sites=", ".join(f'"{s}"' for s in sites), cycles=cycles)


def register(coord: LiveCoordinator, *sites: str) -> dict[str, site_pb2_grpc.SiteServiceStub]:
    stubs = {}
    for s in sites:
        stub = coord.site(s)
        keys = coord.pki.keys(s)
        resp = stub.Register(
            site_pb2.RegisterRequest(
                software_version="test",
                signing_certificate_pem=keys.signing_cert_pem.decode(),
                encryption_certificate_pem=keys.encryption_cert_pem.decode(),
                profile=PROFILE,
            )
        )
        assert resp.site_id == s
        assert resp.federation == "testfed"
        stubs[s] = stub
    return stubs


def next_assignment(stub: site_pb2_grpc.SiteServiceStub) -> site_pb2.Assignment:
    stream = stub.WatchAssignments(site_pb2.WatchAssignmentsRequest(), timeout=10)
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def next_hop(stub: site_pb2_grpc.SiteServiceStub) -> Assignment:
    """The next assignment, as a site's hop runner takes it (a domain type)."""
    return assignment_from_proto(next_assignment(stub))


def upload_bytes(
    stub: site_pb2_grpc.SiteServiceStub, run_id: str, hop: int, data: bytes, tmp: Path
) -> BlobRef:
    path = tmp / f"out-{hop}"
    path.write_bytes(data)
    return transfer.upload(stub, run_id=run_id, hop_index=hop, source=path)


def create_request(pki: Pki, plan_toml: str) -> admin_pb2.CreateRunRequest:
    signed = pki.signed_plan(plan_toml)
    return admin_pb2.CreateRunRequest(
        plan_toml=plan_toml,
        plan_signature=signed.signature,
        owner_signing_certificate_pem=signed.owner_signing_pem,
        owner_encryption_certificate_pem=signed.owner_encryption_pem,
    )


def start_run(
    coord: LiveCoordinator, *sites: str
) -> tuple[dict[str, site_pb2_grpc.SiteServiceStub], str, str]:
    """Registers ``sites`` and starts a one-cycle run over them in that order; returns
    their stubs, the signed plan's digest (the first hop's previous hash) and the run id."""
    stubs = register(coord, *sites)
    text = plan(list(sites))
    request = create_request(coord.pki, text)
    run = coord.admin().CreateRun(request).run
    return stubs, plan_hash(text, request.plan_signature), run.run_id


def seal_hop(
    pki: Pki,
    source: Path,
    sealed: Path,
    *,
    sender: str,
    recipient: str,
    run_id: str,
    hop: int,
    previous: str,
    plan_digest: str,
    schema: str = "0" * 64,
    signer: str | None = None,
) -> bytes:
    """Seals ``source`` to ``sealed`` as ``sender``'s hop for ``recipient``, signed by
    ``signer``'s key (the sender's unless named); returns the signed manifest."""
    return seal_file(
        source,
        sealed,
        ctx=HopContext(
            run_id=run_id,
            hop_index=hop,
            sender=pki.identity(sender).spiffe_id,
            recipient=pki.identity(recipient).spiffe_id,
            previous_manifest_hash=previous,
            plan_hash=plan_digest,
            schema_hash=schema,
        ),
        sender_key=pki.keys(signer or sender).signing_key,
        recipients=[
            RecipientKey(
                spiffe_id=pki.identity(recipient).spiffe_id,
                public_key=pki.keys(recipient).encryption_key.public_key(),
            )
        ],
    )


def seal_and_complete(
    coord: LiveCoordinator,
    stub: site_pb2_grpc.SiteServiceStub,
    *,
    sender: str,
    recipient: str,
    run_id: str,
    hop: int,
    source: Path,
    previous: str,
    plan_digest: str,
    acc: float = 0.5,
    schema: str = "0" * 64,
) -> tuple[BlobRef, bytes]:
    """What a site does after training: seal to the next party, upload, complete."""
    sealed = source.with_suffix(".sealed")
    manifest = seal_hop(
        coord.pki,
        source,
        sealed,
        sender=sender,
        recipient=recipient,
        run_id=run_id,
        hop=hop,
        previous=previous,
        plan_digest=plan_digest,
        schema=schema,
    )
    ref = transfer.upload(stub, run_id=run_id, hop_index=hop, source=sealed)
    stub.CompleteHop(
        site_pb2.CompleteHopRequest(
            run_id=run_id,
            hop_index=hop,
            output=common_pb2.BlobRef(blob_id=ref.blob_id, size=ref.size),
            metrics_before={"accuracy": acc - 0.1},
            metrics_after={"accuracy": acc},
            num_examples=10,
            output_manifest=manifest,
        )
    )
    return ref, manifest


def open_as(
    coord: LiveCoordinator,
    me: str,
    sealed: Path,
    manifest: bytes,
    *,
    sender: str,
    run_id: str,
    hop: int,
    previous: str,
    plan_digest: str,
) -> Path:
    """What the next party does: verify and open the sealed bytes; returns the plaintext."""
    pki = coord.pki
    out = sealed.with_suffix(".opened")
    open_file(
        sealed,
        out,
        manifest,
        me=pki.identity(me).spiffe_id,
        my_key=pki.keys(me).encryption_key,
        expect=Expectation(
            run_id=run_id,
            hop_index=hop,
            sender=pki.identity(sender).spiffe_id,
            previous_manifest_hash=previous,
            plan_hash=plan_digest,
            max_plaintext_bytes=1 << 30,
        ),
        sender_key=pki.keys(sender).signing_key.public_key(),
        replay=MemoryReplayGuard(),
    )
    return out


def coordinator_audit(coord: LiveCoordinator) -> list[dict[str, Any]]:
    """The coordinator's audit entries, after checking the log's chain and signatures."""
    [log] = coord.server.config.state_dir.glob("audit-*.jsonl")
    key = x509.load_pem_x509_certificate(coord.pki.files("coordinator").cert.read_bytes())
    report = verify_log(log, public_key=key.public_key())  # type: ignore[arg-type]
    assert report.ok, report.first_break
    return [json.loads(line) for line in log.read_text().splitlines()]


class Sites:
    """Sites "site-a" and "site-b", registered, with their data, audit logs and hop runners."""

    def __init__(self, coordinator: LiveCoordinator, tmp_path: Path) -> None:
        self.coordinator = coordinator
        self.tmp_path = tmp_path
        self.stubs = register(coordinator, "site-a", "site-b")
        self.fed = make_federation(
            "breast_cancer", ["site-a", "site-b"], Partition(kind="iid"), seed=0
        )
        self.logs: dict[str, AuditLog] = {}
        self.guards: dict[str, MemoryReplayGuard] = {}

    def audit(self, site: str) -> AuditLog:
        """The site's audit log, opened once."""
        if site not in self.logs:
            self.logs[site] = AuditLog(
                self.tmp_path / f"{site}.audit.jsonl",
                party=self.coordinator.pki.identity(site).spiffe_id,
                signing_key=self.coordinator.pki.keys(site).signing_key,
            )
        return self.logs[site]

    def runner(
        self,
        site: str,
        training: SiteTraining | None = None,
        *,
        revoked: Callable[[bytes | str], bool] | None = None,
    ) -> HopRunner:
        """The site's hop runner, as its daemon builds it."""
        return HopRunner(
            GrpcCoordinatorClient(self.stubs[site]),
            tls=self.coordinator.pki.material(site),
            keys=self.coordinator.pki.keys(site),
            local=LocalData(schema=self.fed.schema, data=self.fed.sites[site]),
            work_dir=self.tmp_path / site,
            replay=self.guards.setdefault(site, MemoryReplayGuard()),
            audit=self.audit(site),
            revoked=revoked or (lambda pem: False),
            training=training,
        )
