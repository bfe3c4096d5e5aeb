"""Sites in ``own_keys``: kits without a private key, and the README's CSR steps that work."""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from baton import exit_codes
from baton.errors import PkiError
from baton.security.pki import Identity, load_certificate
from baton.security.pki_csr import issue_from_request, make_tls_request
from baton.security.sealing import AppKeys
from baton.security.tls import channel_credentials
from baton.v1 import site_pb2, site_pb2_grpc
from baton.wire.channel import secure_channel
from coordinator.config import load_coordinator_config
from coordinator.server import CoordinatorServer
from owner.cli import app
from owner.provision import Kits, load_spec, provision
from site_node.config import load_site_config
from tests.integration.sites import PROFILE

SPEC = 'name = "acme"\nsites = ["st-mary", "st-john"]\nown_keys = ["st-john"]\n'
SPEC += '[coordinator]\naddresses = ["127.0.0.1"]\n'


def _kits(tmp_path: Path) -> Kits:
    spec = tmp_path / "federation.toml"
    spec.write_text(SPEC, encoding="utf-8")
    return provision(load_spec(spec), tmp_path / "out")


def _run_readme_commands(readme: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Runs every ``baton pki`` line of ``readme`` from ``cwd``; returns how many it ran."""
    monkeypatch.chdir(cwd)
    lines = readme.read_text(encoding="utf-8").splitlines()
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("    baton pki ")]
    for args in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    return len(commands)


def test_the_readme_steps_make_keys_at_the_site_that_register_over_mtls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = _kits(tmp_path)
    site_dir = kits.site("st-john")
    assert sorted(p.name for p in site_dir.rglob("*") if p.is_file()) == [
        "README.md",
        "ca.pem",
        "site.toml",
    ]
    assert _run_readme_commands(site_dir / "README.md", site_dir, monkeypatch) == 2
    key = site_dir / "pki" / "st-john.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The site sends its two requests, public keys only, to the CA operator.
    shutil.copy(site_dir / "pki" / "st-john.csr", kits.root / "st-john.csr")
    shutil.copy(site_dir / "keys" / "key-request.pem", kits.root / "st-john-key-request.pem")
    assert _run_readme_commands(kits.ca / "README.md", kits.root, monkeypatch) == 2
    certified = kits.root / "certified-st-john"
    assert not list(certified.glob("*.key"))
    shutil.copy(certified / "st-john.pem", site_dir / "pki")
    for name in ("signing.pem", "encryption.pem"):
        shutil.copy(certified / name, site_dir / "keys")

    site = load_site_config(site_dir / "site.toml")
    material = site.tls.load()  # chain to the CA, key matches the certificate
    assert material.identity.spiffe_id == "spiffe://acme/site/st-john"
    keys = AppKeys.load(site.keys_dir)
    issued = load_certificate(material.cert_pem, source="issued")
    provisioned = load_certificate(
        (kits.site("st-mary") / "pki" / "st-mary.pem").read_bytes(), source="provisioned"
    )
    assert [type(e.value) for e in issued.extensions] == [
        type(e.value) for e in provisioned.extensions
    ]
    coord_cfg = load_coordinator_config(kits.coordinator / "coordinator.toml")
    coord_cfg = dataclasses.replace(coord_cfg, listen="127.0.0.1:0", state_dir=tmp_path / "st")
    server = CoordinatorServer(coord_cfg, coord_cfg.tls.load())
    server.start()
    try:
        target = f"127.0.0.1:{server.port}"
        with secure_channel(target, channel_credentials(material)) as channel:
            response = site_pb2_grpc.SiteServiceStub(channel).Register(
                site_pb2.RegisterRequest(
                    software_version="test",
                    signing_certificate_pem=keys.signing_cert_pem.decode(),
                    encryption_certificate_pem=keys.encryption_cert_pem.decode(),
                    profile=PROFILE,
                ),
                timeout=10,
            )
    finally:
        server.stop(grace=0.5)
    assert (response.site_id, response.federation) == ("st-john", "acme")


def _request(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, *names: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "st-john")])
    )
    if names:
        sans = [x509.UniformResourceIdentifier(n) for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def _tampered(tmp_path: Path) -> bytes:
    files = make_tls_request(Identity(federation="acme", kind="site", name="st-john"), tmp_path)
    der = bytearray(
        x509.load_pem_x509_csr(files.request.read_bytes()).public_bytes(serialization.Encoding.DER)
    )
    at = der.find(b"st-john")
    der[at : at + 7] = b"st-jane"  # the signed name, changed after signing
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


P256 = ec.generate_private_key(ec.SECP256R1())
JOHN = "spiffe://acme/site/st-john"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda _: b"not a request", "not a valid PEM certificate signing request"),
        (lambda _: _request(P256, "spiffe://acme/site/st-mary"), "not exactly " + JOHN),
        (lambda _: _request(P256), "names [], not exactly"),
        (lambda _: _request(P256, JOHN, "spiffe://acme/admin/x"), "not exactly " + JOHN),
        (lambda _: _request(ec.generate_private_key(ec.SECP384R1()), JOHN), "not ECDSA P-256"),
        (lambda _: _request(ed25519.Ed25519PrivateKey.generate(), JOHN), "not ECDSA P-256"),
        (_tampered, "signature does not verify"),
    ],
)
def test_a_bad_tls_request_is_refused_by_name(
    tmp_path: Path, make: Callable[[Path], bytes], message: str
) -> None:
    kits = _kits(tmp_path)
    john = Identity(federation="acme", kind="site", name="st-john")
    with pytest.raises(PkiError) as info:
        issue_from_request(kits.ca, tmp_path / "cert", make(tmp_path / "req"), identity=john)
    assert message in info.value.message
    assert not (tmp_path / "cert").exists()


def test_the_command_refuses_a_request_for_another_site_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = _kits(tmp_path)
    monkeypatch.chdir(kits.root)
    request = ["pki", "tls-request", "--federation", "acme", "--kind", "site"]
    made = CliRunner().invoke(app, [*request, "--name", "st-mary", "--out", "req"])
    assert made.exit_code == 0, made.output
    args = ["pki", "tls-certify", "--ca", "ca", "--request", "req/st-mary.csr", "--kind"]
    refused = CliRunner().invoke(app, [*args, "site", "--name", "st-john", "--out", "c"])
    assert refused.exit_code == exit_codes.CLI_PKI
    assert "names ['spiffe://acme/site/st-mary'], not exactly" in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)


def test_a_coordinator_certified_from_its_request_gets_the_names_the_ca_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = _kits(tmp_path)
    monkeypatch.chdir(kits.root)
    request = ["pki", "tls-request", "--federation", "acme", "--kind"]
    for kind in ("site", "coordinator"):
        made = CliRunner().invoke(app, [*request, kind, "--name", "hub", "--out", kind])
        assert made.exit_code == 0, made.output
    certify = ["pki", "tls-certify", "--ca", "ca", "--name", "hub", "--dns", "hub.org"]
    site = CliRunner().invoke(
        app, [*certify, "--request", "site/hub.csr", "--kind", "site", "--out", "s"]
    )
    assert site.exit_code == exit_codes.CLI_PKI
    assert "a site certificate cannot carry DNS or IP names ('hub.org')" in site.output
    assert not (kits.root / "s").exists()
    done = CliRunner().invoke(
        app,
        [*certify, "--request", "coordinator/hub.csr", "--kind", "coordinator", "--out", "c",
         "--ip", "::1"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    cert = load_certificate((kits.root / "c" / "hub.pem").read_bytes(), source="hub")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [
        x509.UniformResourceIdentifier("spiffe://acme/coordinator/hub"),
        x509.DNSName("hub.org"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
