"""Tests of the federation PKI, TLS file loading, peer identity and the ``baton pki`` CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import warnings
from typing import TYPE_CHECKING, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from baton import exit_codes
from baton.errors import PkiError
from baton.security.pki import (
    Identity,
    IssuedFiles,
    create_ca,
    federation_of_ca,
    identity_from_certificate,
    issue,
)
from baton.security.tls import TlsFiles, peer_identity, require_peer

with warnings.catch_warnings():
    # typer 0.20 re-exports click helpers that click 8.5 deprecates, warning at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from typer.testing import CliRunner

    from owner.cli_pki import pki_app

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

LABEL = "^[a-z0-9][a-z0-9.-]{0,62}$"
SITE = Identity(federation="acme", kind="site", name="st-mary")
HUB = Identity(federation="acme", kind="coordinator", name="hub")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _hand_built(
    ca_dir: Path,
    out: Path,
    *,
    uris: list[str],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> TlsFiles:
    """Writes a leaf signed by the CA in ``ca_dir`` with exactly the given URIs and dates."""
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if uris:
        sans = [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out.mkdir(exist_ok=True)
    (out / "hand.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "hand.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(ca=ca_dir / "ca.pem", cert=out / "hand.pem", key=out / "hand.key")


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    create_ca(tmp_path / "ca", "acme")
    return tmp_path / "ca"


@pytest.fixture
def site(ca_dir: Path, tmp_path: Path) -> IssuedFiles:
    return issue(ca_dir, tmp_path / "site", SITE)


# Identity ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["site", "admin", "coordinator"])
def test_identity_round_trips_through_its_spiffe_id(kind: str) -> None:
    identity = Identity(federation="acme.health", kind=kind, name="a-1.b")
    assert identity.spiffe_id == f"spiffe://acme.health/{kind}/a-1.b"
    assert Identity.parse(identity.spiffe_id) == identity


SHAPE = "expected spiffe://<federation>/<kind>/<name>"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("https://acme/site/a", "the scheme must be spiffe://"),
        ("SPIFFE://acme/site/a", "the scheme must be spiffe://"),
        ("spiffe:/acme/site/a", "the scheme must be spiffe://"),
        ("spiffe://acme/site", SHAPE),
        ("spiffe://acme/site/a/extra", SHAPE),
        ("spiffe://acme/site/a/", SHAPE),
        ("spiffe:///site/a", SHAPE),
        ("spiffe://acme//a", SHAPE),
        ("spiffe://acme/site/", SHAPE),
        ("spiffe://acme/robot/a", "kind 'robot' is not one of site, admin, coordinator"),
        ("spiffe://Acme/site/a", f"federation 'Acme' must match {LABEL}"),
        ("spiffe://acme:443/site/a", f"federation 'acme:443' must match {LABEL}"),
        ("spiffe://-acme/site/a", f"federation '-acme' must match {LABEL}"),
        ("spiffe://acme/site/a_b", f"name 'a_b' must match {LABEL}"),
        ("spiffe://acme/site/a?x=1", f"name 'a?x=1' must match {LABEL}"),
        ("spiffe://acme/site/" + "a" * 64, f"name {'a' * 64!r} must match {LABEL}"),
    ],
)
def test_parse_rejects_malformed_ids_with_a_clear_message(uri: str, problem: str) -> None:
    with pytest.raises(PkiError) as caught:
        Identity.parse(uri)
    assert str(caught.value) == f"invalid SPIFFE id {uri!r}: {problem}"


def test_identity_constructor_validates_its_parts() -> None:
    with pytest.raises(PkiError) as caught:
        Identity(federation="acme", kind="robot", name="a")
    assert (
        str(caught.value) == "invalid identity: kind 'robot' is not one of site, admin, coordinator"
    )


# CA ------------------------------------------------------------------------------------


def test_create_ca_writes_a_constrained_p256_ca(tmp_path: Path) -> None:
    ca_pem = create_ca(tmp_path / "new" / "ca", "acme")
    assert ca_pem == tmp_path / "new" / "ca" / "ca.pem"
    assert _mode(tmp_path / "new" / "ca") == 0o700
    assert _mode(tmp_path / "new" / "ca" / "ca.key") == 0o600
    cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=acme federation CA"
    assert cert.issuer == cert.subject
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (basic.critical, basic.value.ca, basic.value.path_length) == (True, True, 0)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    names = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert names.value.permitted_subtrees == [x509.UniformResourceIdentifier("acme")]
    assert names.value.excluded_subtrees is None
    assert federation_of_ca(ca_pem.read_bytes()) == "acme"
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < remaining <= dt.timedelta(days=3650)


def test_create_ca_refuses_to_overwrite(ca_dir: Path) -> None:
    before = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()
    with pytest.raises(PkiError) as caught:
        create_ca(ca_dir, "acme")
    assert (
        str(caught.value)
        == f"{ca_dir / 'ca.pem'} already exists; refusing to overwrite an existing CA"
    )
    assert ((ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()) == before


def test_create_ca_rejects_a_bad_federation_name(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as caught:
        create_ca(tmp_path, "Acme Health")
    assert str(caught.value) == f"invalid federation 'Acme Health': must match {LABEL}"
    assert list(tmp_path.iterdir()) == []


# Issue ---------------------------------------------------------------------------------


def test_issue_writes_a_leaf_naming_the_identity(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    files = issue(ca_dir, out, SITE, days=30)
    assert files == IssuedFiles(
        cert=out / "st-mary.pem", key=out / "st-mary.key", ca=out / "ca.pem"
    )
    assert (_mode(out), _mode(files.key)) == (0o700, 0o600)
    assert files.ca.read_bytes() == (ca_dir / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca.read_bytes()))
    assert cert.subject.rfc4514_string() == "CN=st-mary"
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("spiffe://acme/site/st-mary")
    ]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_cert_sign) == (True, False)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < remaining <= dt.timedelta(days=30)
    assert identity_from_certificate(files.cert.read_bytes()) == SITE
    material = TlsFiles(ca=files.ca, cert=files.cert, key=files.key).load()
    assert material.identity == SITE
    assert material.key_pem == files.key.read_bytes()
    assert b"PRIVATE KEY" not in repr(material).encode()


def test_a_coordinator_certificate_is_a_server_certificate_naming_its_hosts(
    ca_dir: Path, tmp_path: Path
) -> None:
    files = issue(
        ca_dir, tmp_path / "hub", HUB, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"]
    )
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("spiffe://acme/coordinator/hub"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]


@pytest.mark.parametrize("kind", ["site", "admin"])
@pytest.mark.parametrize(("dns", "ip"), [(["localhost"], []), ([], ["127.0.0.1"])])
def test_only_a_coordinator_certificate_may_name_a_host(
    ca_dir: Path, tmp_path: Path, kind: str, dns: list[str], ip: list[str]
) -> None:
    party = Identity(federation="acme", kind=kind, name="st-mary")
    with pytest.raises(PkiError) as caught:
        issue(ca_dir, tmp_path / "out", party, dns_names=dns, ip_addresses=ip)
    assert str(caught.value) == (
        f"a {kind} certificate cannot carry DNS or IP names ('{[*dns, *ip][0]}'): only the "
        f"coordinator's certificate names the host it is dialled at, and a {kind} is named "
        "by its SPIFFE id alone"
    )
    assert not (tmp_path / "out").exists()


def test_issue_refuses_another_federation(ca_dir: Path, tmp_path: Path) -> None:
    other = Identity(federation="globex", kind="site", name="a")
    with pytest.raises(PkiError) as caught:
        issue(ca_dir, tmp_path / "out", other)
    assert str(caught.value) == (
        f"cannot issue spiffe://globex/site/a: the CA in {ca_dir} is for federation "
        "'acme', not 'globex'"
    )
    assert not (tmp_path / "out").exists()


def test_issue_refuses_to_overwrite_a_key(site: IssuedFiles, ca_dir: Path) -> None:
    key_before = site.key.read_bytes()
    site.cert.unlink()
    with pytest.raises(PkiError) as caught:
        issue(ca_dir, site.key.parent, SITE)
    assert str(caught.value) == f"{site.key} already exists; remove it first to re-issue"
    assert site.key.read_bytes() == key_before


@pytest.mark.parametrize(
    ("dns", "ip", "message"),
    [
        (["bad name"], [], "invalid DNS name 'bad name'"),
        (
            [],
            ["300.1.1.1"],
            "invalid IP address: '300.1.1.1' does not appear to be an IPv4 or IPv6 address",
        ),
    ],
)
def test_issue_rejects_bad_sans(
    ca_dir: Path, tmp_path: Path, dns: list[str], ip: list[str], message: str
) -> None:
    with pytest.raises(PkiError) as caught:
        issue(ca_dir, tmp_path / "out", HUB, dns_names=dns, ip_addresses=ip)
    assert str(caught.value) == message


def test_issue_names_a_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as caught:
        issue(tmp_path / "nowhere", tmp_path / "out", SITE)
    assert str(caught.value) == (
        f"cannot read CA certificate {tmp_path / 'nowhere' / 'ca.pem'}: No such file or directory"
    )


def test_identity_from_certificate_needs_exactly_one_uri(ca_dir: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    window = {"not_before": now - dt.timedelta(hours=1), "not_after": now + dt.timedelta(days=1)}
    for uris, count in (([], 0), (["spiffe://acme/site/a", "spiffe://acme/site/b"], 2)):
        files = _hand_built(ca_dir, tmp_path / f"n{count}", uris=uris, **window)
        with pytest.raises(PkiError) as caught:
            identity_from_certificate(files.cert.read_bytes())
        assert str(caught.value) == (
            f"the certificate has {count} URI SANs; exactly one spiffe:// URI is required"
        )


def test_federation_of_ca_rejects_a_leaf(site: IssuedFiles) -> None:
    with pytest.raises(PkiError) as caught:
        federation_of_ca(site.cert.read_bytes())
    assert str(caught.value) == "the CA certificate is not a CA (basicConstraints CA is not set)"


# TlsFiles.load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "role"), [("ca", "CA certificate"), ("cert", "certificate"), ("key", "private key")]
)
def test_load_names_the_missing_file_and_its_role(site: IssuedFiles, field: str, role: str) -> None:
    files = TlsFiles(ca=site.ca, cert=site.cert, key=site.key)
    missing = getattr(files, field)
    missing.unlink()
    with pytest.raises(PkiError) as caught:
        files.load()
    assert str(caught.value) == f"cannot read {role} {missing}: No such file or directory"


def test_load_rejects_an_expired_certificate(ca_dir: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ended = (now - dt.timedelta(days=1)).replace(second=0, microsecond=0)
    files = _hand_built(
        ca_dir,
        tmp_path / "old",
        uris=[SITE.spiffe_id],
        not_before=now - dt.timedelta(days=30),
        not_after=ended,
    )
    with pytest.raises(PkiError) as caught:
        files.load()
    assert str(caught.value) == f"certificate {files.cert} expired on {ended:%Y-%m-%d %H:%M} UTC"


def test_load_rejects_a_certificate_not_yet_valid(ca_dir: Path, tmp_path: Path) -> None:
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(second=0, microsecond=0)
    files = _hand_built(
        ca_dir,
        tmp_path / "future",
        uris=[SITE.spiffe_id],
        not_before=start,
        not_after=start + dt.timedelta(days=1),
    )
    with pytest.raises(PkiError) as caught:
        files.load()
    assert (
        str(caught.value)
        == f"certificate {files.cert} is not valid before {start:%Y-%m-%d %H:%M} UTC"
    )


def test_load_rejects_a_key_of_another_certificate(
    site: IssuedFiles, ca_dir: Path, tmp_path: Path
) -> None:
    other = issue(ca_dir, tmp_path / "other", Identity(federation="acme", kind="site", name="b"))
    with pytest.raises(PkiError) as caught:
        TlsFiles(ca=site.ca, cert=site.cert, key=other.key).load()
    assert str(caught.value) == f"private key {other.key} does not match certificate {site.cert}"


def test_load_rejects_a_certificate_from_a_foreign_ca(site: IssuedFiles, tmp_path: Path) -> None:
    create_ca(tmp_path / "foreign", "acme")
    foreign = tmp_path / "foreign" / "ca.pem"
    with pytest.raises(PkiError) as caught:
        TlsFiles(ca=foreign, cert=site.cert, key=site.key).load()
    assert str(caught.value) == f"certificate {site.cert} was not issued by the CA in {foreign}"


def test_load_rejects_a_certificate_without_identity(ca_dir: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    files = _hand_built(
        ca_dir, tmp_path / "anon", uris=[], not_before=now, not_after=now + dt.timedelta(days=1)
    )
    with pytest.raises(PkiError) as caught:
        files.load()
    assert str(caught.value) == (
        f"certificate {files.cert} is not acceptable: "
        "the certificate has 0 URI SANs; exactly one spiffe:// URI is required"
    )


# Peer identity (the real handshake is in tests/integration/test_mtls.py) ---------------


class _Context:
    """Just enough of grpc.ServicerContext for peer_identity."""

    def __init__(self, properties: dict[str, list[bytes]]) -> None:
        self._properties = properties

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._properties


def test_peer_identity_requires_a_certificate() -> None:
    context = cast("grpc.ServicerContext", _Context({"transport_security_type": [b"ssl"]}))
    with pytest.raises(PkiError) as caught:
        peer_identity(context)
    assert str(caught.value) == "the peer presented no certificate"


def test_require_peer_checks_federation_and_kind(site: IssuedFiles) -> None:
    context = cast(
        "grpc.ServicerContext",
        _Context({"x509_pem_cert": [site.cert.read_bytes()], "ssl_tls_version": [b"TLSv1.3"]}),
    )
    assert require_peer(context, federation="acme", kind="site") == SITE
    with pytest.raises(PkiError) as caught:
        require_peer(context, federation="acme", kind="coordinator")
    assert (
        str(caught.value)
        == "peer spiffe://acme/site/st-mary is not a coordinator of federation 'acme'"
    )
    with pytest.raises(PkiError) as caught:
        require_peer(context, federation="globex", kind="site")
    assert (
        str(caught.value) == "peer spiffe://acme/site/st-mary is not a site of federation 'globex'"
    )


# CLI -----------------------------------------------------------------------------------

_PLAIN = {"NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "60"}


def test_cli_creates_a_ca_and_issues_a_certificate(tmp_path: Path) -> None:
    runner = CliRunner(env=_PLAIN)
    ca, out = tmp_path / "ca", tmp_path / "coordinator"
    result = runner.invoke(pki_app, ["init", "--federation", "acme", "--out", str(ca)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert "created the CA of federation acme" in result.stdout
    result = runner.invoke(
        pki_app,
        ["issue", "--ca", str(ca), "--kind", "coordinator", "--name", "hub", "--out", str(out),
         "--dns", "localhost", "--ip", "127.0.0.1", "--ip", "::1", "--days", "7"],
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == "issued spiffe://acme/coordinator/hub"
    assert "PRIVATE KEY" not in result.output
    assert _mode(out / "hub.key") == 0o600
    cert = x509.load_pem_x509_certificate((out / "hub.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    material = TlsFiles(ca=out / "ca.pem", cert=out / "hub.pem", key=out / "hub.key").load()
    assert material.identity == Identity(federation="acme", kind="coordinator", name="hub")


def test_cli_refuses_a_host_name_for_a_site(tmp_path: Path) -> None:
    runner = CliRunner(env={**_PLAIN, "COLUMNS": "400"})
    ca, out = tmp_path / "ca", tmp_path / "site"
    assert runner.invoke(pki_app, ["init", "--federation", "acme", "--out", str(ca)]).exit_code == 0
    result = runner.invoke(
        pki_app,
        ["issue", "--ca", str(ca), "--kind", "site", "--name", "st-mary", "--out", str(out),
         "--dns", "localhost"],
    )  # fmt: skip
    assert result.exit_code == exit_codes.CLI_PKI
    assert result.stderr == (
        "error: a site certificate cannot carry DNS or IP names ('localhost'): only the "
        "coordinator's certificate names the host it is dialled at, and a site is named by "
        "its SPIFFE id alone\n"
    )
    assert not out.exists()


def test_cli_reports_an_error_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner(env=_PLAIN)
    ca = tmp_path / "a-rather-long-directory-name-so-that-the-message-exceeds-the-width" / "ca"
    assert runner.invoke(pki_app, ["init", "--federation", "acme", "--out", str(ca)]).exit_code == 0
    result = runner.invoke(pki_app, ["init", "--federation", "acme", "--out", str(ca)])
    assert result.exit_code == exit_codes.CLI_PKI
    assert result.stderr == (
        f"error: {ca / 'ca.pem'} already exists; refusing to overwrite an existing CA\n"
    )
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_cli_rejects_an_invalid_name(tmp_path: Path) -> None:
    runner = CliRunner(env=_PLAIN)
    ca = tmp_path / "ca"
    assert runner.invoke(pki_app, ["init", "--federation", "acme", "--out", str(ca)]).exit_code == 0
    result = runner.invoke(
        pki_app,
        [
            "issue",
            "--ca",
            str(ca),
            "--kind",
            "site",
            "--name",
            "St Mary",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == exit_codes.CLI_PKI
    assert result.stderr == f"error: invalid identity: name 'St Mary' must match {LABEL}\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("version", [[b"TLSv1.2"], []])
def test_require_peer_refuses_a_call_not_over_tls13(
    site: IssuedFiles, version: list[bytes]
) -> None:
    context = cast(
        "grpc.ServicerContext",
        _Context({"x509_pem_cert": [site.cert.read_bytes()], "ssl_tls_version": version}),
    )
    with pytest.raises(PkiError) as caught:
        require_peer(context, federation="acme", kind="site")
    shown = version[0].decode() if version else "no TLS"
    assert str(caught.value) == f"the peer connected with {shown}; only TLSv1.3 is served"
