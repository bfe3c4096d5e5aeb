"""Offline verification of a run's chain of sealed hops, and each way the chain can break."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from baton import exit_codes
from baton.entry import make_app
from baton.security.chain import ChainReport, HopEvidence, verify_run_chain
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.keys import fingerprint
from baton.security.manifest import MIN_CHUNK_SIZE, SIGNATURE_DOMAIN
from baton.security.pki import Identity, create_ca
from baton.security.sealing import AppKeys, manifest_digest, plan_hash, provision_app_keys
from baton.v1 import admin_pb2, common_pb2, envelope_pb2
from owner import cli_verify
from tests.conftest import FEDERATION

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

    from tests.conftest import Pki

RUN = "run-chain"
PLAN = '[run]\nname = "chain"\nsites = ["site-a", "site-b", "site-c"]\n'
SITES = ("site-a", "site-b", "site-c")
SCHEMA = hashlib.sha256(b"schema").hexdigest()
OWNER_ID = "spiffe://testfed/admin/owner"


def spiffe(name: str) -> str:
    return f"spiffe://testfed/site/{name}"


@dataclass(kw_only=True)
class Chain:
    """A real three-hop run: site-a, site-b, site-c, then sealed to the owner."""

    pki: Pki
    root: Path
    signature: bytes
    plan_digest: str
    hops: list[HopEvidence]

    def seal(
        self,
        index: int,
        *,
        site: str,
        to: str,
        previous: str,
        plan_digest: str | None = None,
        schema: str = SCHEMA,
        to_key: str | None = None,
    ) -> HopEvidence:
        """Seals hop ``index`` from ``site`` to ``to`` (a site, or "owner")."""
        plain, blob = self.root / f"plain-{index}", self.root / f"blob-{index}-{site}-{to}"
        plain.write_bytes(hashlib.sha256(f"{index}".encode()).digest() * 300)
        keys = self.pki.keys(site)
        recipient = self.pki.identity(to).spiffe_id
        manifest = seal_file(
            plain,
            blob,
            ctx=HopContext(
                run_id=RUN,
                hop_index=index,
                sender=spiffe(site),
                recipient=recipient,
                previous_manifest_hash=previous,
                plan_hash=plan_digest or self.plan_digest,
                schema_hash=schema,
            ),
            sender_key=keys.signing_key,
            recipients=[
                RecipientKey(
                    spiffe_id=recipient,
                    public_key=self.pki.keys(to_key or to).encryption_key.public_key(),
                )
            ],
            chunk_size=MIN_CHUNK_SIZE,
        )
        return evidence(keys, index, site, blob.read_bytes(), manifest)

    def verify(self, hops: list[HopEvidence] | None = None, **overrides: object) -> ChainReport:
        owner = self.pki.keys("owner")
        kwargs: dict[str, object] = {
            "ca_pem": self.pki.ca_pem,
            "run_id": RUN,
            "plan_toml": PLAN,
            "plan_signature": self.signature,
            "owner_signing_pem": owner.signing_cert_pem,
            "owner_encryption_pem": owner.encryption_cert_pem,
            "hops": self.hops if hops is None else hops,
        }
        return verify_run_chain(**{**kwargs, **overrides})  # type: ignore[arg-type]


def evidence(keys: AppKeys, index: int, site: str, blob: bytes, manifest: bytes) -> HopEvidence:
    return HopEvidence(
        hop_index=index,
        site_id=site,
        blob_id=hashlib.sha256(blob).hexdigest(),
        blob_size=len(blob),
        manifest=manifest,
        signing_cert_pem=keys.signing_cert_pem.decode(),
        encryption_cert_pem=keys.encryption_cert_pem.decode(),
    )


@pytest.fixture
def chain(pki: Pki, tmp_path: Path) -> Chain:
    signed = pki.signed_plan(PLAN)
    c = Chain(
        pki=pki,
        root=tmp_path,
        signature=signed.signature,
        plan_digest=plan_hash(PLAN, signed.signature),
        hops=[],
    )
    previous = c.plan_digest
    for i, site in enumerate(SITES):
        to = SITES[i + 1] if i + 1 < len(SITES) else "owner"
        c.hops.append(c.seal(i, site=site, to=to, previous=previous))
        previous = manifest_digest(c.hops[-1].manifest)
    return c


def assert_break(report: ChainReport, hop: int | None, reason: str) -> None:
    assert not report.ok
    assert (report.broken_hop, report.reason) == (hop, reason)
    assert report.hops_verified == (hop or 0)
    assert len(report.manifests) == report.hops_verified


def test_intact_chain_verifies(chain: Chain) -> None:
    report = chain.verify()
    assert report.ok
    assert (report.hops_verified, report.broken_hop, report.reason) == (3, None, None)
    assert report.plan_hash == chain.plan_digest
    assert [m.digest for m in report.manifests] == [manifest_digest(h.manifest) for h in chain.hops]
    assert [m.recipient for m in report.manifests] == [spiffe("site-b"), spiffe("site-c"), OWNER_ID]
    assert report.describe() == "3 hops verified"


def test_run_in_progress_is_checked_against_the_next_site(chain: Chain) -> None:
    assert chain.verify(chain.hops[:2], next_site_id="site-c").ok
    assert chain.verify([], next_site_id="site-a").ok
    assert_break(chain.verify(chain.hops[:2]), 1, f"sealed to {spiffe('site-c')}, not {OWNER_ID}")
    assert_break(
        chain.verify(chain.hops[:2], next_site_id="site-a"),
        1,
        f"sealed to {spiffe('site-c')}, not {spiffe('site-a')}",
    )


def test_manifest_swapped_between_hops(chain: Chain) -> None:
    h0, h1, h2 = chain.hops
    swapped = [h0, dataclasses.replace(h1, manifest=h2.manifest), h2]
    report = chain.verify(swapped)
    assert_break(
        report, 1, "manifest rejected: bad_signature: not signed by the expected sender's key"
    )
    assert report.describe().startswith("hop 1: manifest rejected")


def _resigned_by(chain: Chain, hop: HopEvidence, signer: str) -> bytes:
    """The hop's manifest, re-signed by ``signer`` (with its key fingerprint put in)."""
    key = chain.pki.keys(signer).signing_key
    outer = envelope_pb2.SignedManifest.FromString(hop.manifest)
    inner = envelope_pb2.HopManifest.FromString(outer.manifest)
    inner.sender_key_fingerprint = fingerprint(key.public_key())
    body = inner.SerializeToString(deterministic=True)
    return envelope_pb2.SignedManifest(
        manifest=body, signature=key.sign(SIGNATURE_DOMAIN + body)
    ).SerializeToString()


def test_manifest_re_signed_by_another_site(chain: Chain) -> None:
    h0, h1, h2 = chain.hops
    forged = _resigned_by(chain, h1, "site-c")
    assert_break(
        chain.verify([h0, dataclasses.replace(h1, manifest=forged), h2]),
        1,
        "manifest rejected: bad_signature: not signed by the expected sender's key",
    )
    # Claimed as site-c's own hop, its certificates verify the signature, but hop 0 was
    # sealed to site-b, and the manifest still names site-b as sender.
    c = chain.pki.keys("site-c")
    as_c = evidence(c, 1, "site-c", b"", forged)
    as_c = dataclasses.replace(as_c, blob_id=h1.blob_id, blob_size=h1.blob_size)
    assert_break(
        chain.verify([h0, as_c, h2]), 0, f"sealed to {spiffe('site-b')}, not {spiffe('site-c')}"
    )
    # Even after a hop 0 sealed to site-c, the forged manifest names site-b as its sender.
    to_c = chain.seal(0, site="site-a", to="site-c", previous=chain.plan_digest)
    assert_break(
        chain.verify([to_c, as_c], next_site_id="site-c"),
        1,
        f"the manifest names sender {spiffe('site-b')}, not {spiffe('site-c')}",
    )


def test_broken_previous_hash(chain: Chain) -> None:
    h0, h1, _ = chain.hops
    skip = chain.seal(2, site="site-c", to="owner", previous=manifest_digest(h0.manifest))
    assert_break(
        chain.verify([h0, h1, skip]),
        2,
        "the previous-manifest hash is not the digest of hop 1's manifest",
    )
    rootless = chain.seal(0, site="site-a", to="site-b", previous=hashlib.sha256(b"x").hexdigest())
    assert_break(
        chain.verify([rootless, *chain.hops[1:]]),
        0,
        "the previous-manifest hash is not the signed plan's hash",
    )


def test_plan_text_edited(chain: Chain) -> None:
    report = chain.verify(plan_toml=PLAN.replace("site-c", "site-z"))
    assert_break(report, None, f"the run plan's signature does not verify with {OWNER_ID}'s key")
    assert report.describe().startswith("plan: ")
    assert report.plan_hash == ""
    assert_break(chain.verify(plan_signature=b""), None, "the run plan is not signed")


def test_hop_sealed_under_another_plan_or_schema(chain: Chain) -> None:
    other = hashlib.sha256(b"another plan").hexdigest()
    h0 = chain.seal(0, site="site-a", to="site-b", previous=chain.plan_digest, plan_digest=other)
    assert_break(chain.verify([h0]), 0, "the plan hash is not the signed plan's hash")
    h0, h1, _ = chain.hops
    h2 = chain.seal(
        2,
        site="site-c",
        to="owner",
        previous=manifest_digest(h1.manifest),
        schema=hashlib.sha256(b"another model").hexdigest(),
    )
    assert_break(chain.verify([h0, h1, h2]), 2, "the model schema differs from hop 0's")


def test_wrong_blob_id_or_size(chain: Chain) -> None:
    h0, h1, h2 = chain.hops
    wrong = hashlib.sha256(b"another blob").hexdigest()
    assert_break(
        chain.verify([h0, dataclasses.replace(h1, blob_id=wrong), h2]),
        1,
        f"the manifest's ciphertext hash does not match blob {wrong[:16]}",
    )
    assert_break(
        chain.verify([h0, h1, dataclasses.replace(h2, blob_size=h2.blob_size + 1)]),
        2,
        f"the manifest's ciphertext length {h2.blob_size} != blob size {h2.blob_size + 1}",
    )


def test_hop_missing_or_repeated(chain: Chain) -> None:
    h0, h1, h2 = chain.hops
    assert_break(chain.verify([h0, h2]), 1, "hop 1 is missing (the next evidence is hop 2)")
    assert_break(chain.verify([h1, h2]), 0, "hop 0 is missing (the next evidence is hop 1)")
    assert_break(chain.verify([h0, h0, h1]), 1, "hop 0 is repeated or out of order")


def test_site_certificate_from_a_foreign_ca(chain: Chain, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign-ca"
    create_ca(foreign, FEDERATION)
    impostor = Identity(federation=FEDERATION, kind="site", name="site-b")
    provision_app_keys(foreign, tmp_path / "impostor", impostor)
    keys = AppKeys.load(tmp_path / "impostor")
    h0, h1, h2 = chain.hops
    forged = dataclasses.replace(
        h1,
        signing_cert_pem=keys.signing_cert_pem,
        encryption_cert_pem=keys.encryption_cert_pem,
    )
    assert_break(
        chain.verify([h0, forged, h2]),
        1,
        f"site certificates: the signing certificate of {spiffe('site-b')} was not issued by "
        "the pinned CA",
    )
    # The verifier's own CA is what counts: with the foreign CA nothing verifies.
    assert_break(
        chain.verify(ca_pem=(foreign / "ca.pem").read_bytes()),
        None,
        f"owner certificates: the signing certificate of {OWNER_ID} was not issued by the "
        "pinned CA",
    )


def test_site_keys_cannot_stand_in_for_the_owner(chain: Chain) -> None:
    site = chain.pki.keys("site-a")
    assert_break(
        chain.verify(
            owner_signing_pem=site.signing_cert_pem, owner_encryption_pem=site.encryption_cert_pem
        ),
        None,
        f"owner certificates: the run plan was signed by {spiffe('site-a')}, not a study owner",
    )


def test_wrong_run_or_recipient_key(chain: Chain) -> None:
    assert_break(
        chain.verify(run_id="run-other"), 0, "the manifest is for run 'run-chain', not 'run-other'"
    )
    h0 = chain.seal(0, site="site-a", to="site-b", previous=chain.plan_digest, to_key="site-c")
    assert_break(
        chain.verify([h0, *chain.hops[1:]]),
        0,
        f"the key wrapped to {spiffe('site-b')} is not its certified encryption key",
    )


def test_garbage_evidence_is_a_break_not_an_exception(chain: Chain) -> None:
    h0 = chain.hops[0]
    assert_break(
        chain.verify([dataclasses.replace(h0, manifest=b"\xff junk")]),
        0,
        "manifest rejected: malformed: not a SignedManifest",
    )
    report = chain.verify([dataclasses.replace(h0, site_id="Not A Site!")])
    assert report.broken_hop == 0
    assert report.reason is not None
    assert report.reason.startswith("site certificates: invalid identity")
    report = chain.verify([dataclasses.replace(h0, signing_cert_pem="é not pem")])
    assert (report.broken_hop, report.reason) == (
        0,
        "site certificates: a certificate is not ASCII PEM",
    )
    assert_break(
        chain.verify(ca_pem=b"junk"),
        None,
        "owner certificates: the CA certificate is not a valid PEM certificate",
    )


class FakeAdmin:
    """Answers GetRun and ListSites as a coordinator would."""

    def __init__(self, run: admin_pb2.Run, sites: list[admin_pb2.Site]) -> None:
        self.run, self.sites = run, sites

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_run(self, run_id: str) -> admin_pb2.Run:
        assert run_id == self.run.run_id
        return self.run

    def list_sites(self) -> list[admin_pb2.Site]:
        return self.sites


def run_proto(
    chain: Chain, hops: list[HopEvidence], pending: tuple[str, ...] = ()
) -> admin_pb2.Run:
    done = [
        common_pb2.Hop(
            hop_index=h.hop_index,
            site_id=h.site_id,
            state=common_pb2.HOP_STATE_COMPLETED,
            output=common_pb2.BlobRef(blob_id=h.blob_id, size=h.blob_size),
            output_manifest=h.manifest,
        )
        for h in hops
    ]
    later = [
        common_pb2.Hop(hop_index=len(hops) + i, site_id=s, state=common_pb2.HOP_STATE_PENDING)
        for i, s in enumerate(pending)
    ]
    return admin_pb2.Run(
        run_id=RUN,
        total_hops=len(done) + len(later),
        hops=[*later, *done],  # order on the wire does not matter
        plan_toml=PLAN,
        plan_signature=chain.signature,
    )


def verify_run_cli(
    chain: Chain, run: admin_pb2.Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Result:
    owner = chain.pki.files("owner")
    admin = tmp_path / "admin.toml"
    admin.write_text(
        f'coordinator = "127.0.0.1:1"\nkeys_dir = "{chain.pki.root / "owner" / "keys"}"\n'
        f'[tls]\nca = "{owner.ca}"\ncert = "{owner.cert}"\nkey = "{owner.key}"\n'
    )
    sites = [
        admin_pb2.Site(
            site_id=s,
            signing_certificate_pem=chain.pki.keys(s).signing_cert_pem.decode(),
            encryption_certificate_pem=chain.pki.keys(s).encryption_cert_pem.decode(),
        )
        for s in SITES
    ]
    monkeypatch.setattr(cli_verify, "admin_client", lambda path: FakeAdmin(run, sites))
    app = make_app("test")
    cli_verify.register(app)
    env = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, ["verify-run", RUN, "--admin", str(admin)])


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of a rich table, as cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def test_verify_run_command(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = verify_run_cli(chain, run_proto(chain, chain.hops), tmp_path, monkeypatch)
    assert (result.exit_code, result.stderr) == (0, "")
    assert table_rows(result.stdout) == [
        [str(h.hop_index), h.site_id, h.blob_id[:16], to, "ok"]
        for h, to in zip(chain.hops, [spiffe("site-b"), spiffe("site-c"), OWNER_ID], strict=True)
    ]
    assert result.stdout.splitlines()[-1] == f"run {RUN}: 3 hops verified, chain intact"

    in_progress = run_proto(chain, chain.hops[:2], pending=("site-c",))
    result = verify_run_cli(chain, in_progress, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"run {RUN}: 2 hops verified, chain intact"


def test_verify_run_command_fails_at_the_first_break(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h0, h1, h2 = chain.hops
    wrong = hashlib.sha256(b"another blob").hexdigest()
    run = run_proto(chain, [h0, dataclasses.replace(h1, blob_id=wrong), h2])
    result = verify_run_cli(chain, run, tmp_path, monkeypatch)
    assert result.exit_code == exit_codes.CLI_ERROR
    assert result.stderr == (
        f"error: run {RUN}: hop 1: the manifest's ciphertext hash does not match blob "
        f"{wrong[:16]}\n"
    )
    reason = f"broken: the manifest's ciphertext hash does not match blob {wrong[:16]}"
    assert [[r[0], r[3], r[4]] for r in table_rows(result.stdout)] == [
        ["0", spiffe("site-b"), "ok"],
        ["1", "", reason],
        ["2", "", "not checked"],
    ]
    assert "Traceback" not in result.output
