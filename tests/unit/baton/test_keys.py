"""Tests of a party's application keys, their certification and the sender's checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from baton.errors import PkiError
from baton.security.keys import (
    ENCRYPTION_EKU_OID,
    SIGNING_EKU_OID,
    X25519_REQUEST_OID,
    KeyFiles,
    certify,
    fingerprint,
    generate_keys,
    load_encryption_key,
    load_signing_key,
    make_key_request,
    verify_party_keys,
)
from baton.security.pki import Identity, create_ca, issue

if TYPE_CHECKING:
    from pathlib import Path

SITE = Identity(federation="acme", kind="site", name="st-mary")
OTHER = Identity(federation="acme", kind="site", name="st-john")


@dataclass(frozen=True, kw_only=True, slots=True)
class Certified:
    """A party's keys and the certificates the CA issued for them."""

    ca_pem: bytes
    files: KeyFiles
    signing_pem: bytes
    encryption_pem: bytes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _request(files: KeyFiles, identity: Identity = SITE) -> bytes:
    return make_key_request(
        identity,
        load_signing_key(files.signing),
        load_encryption_key(files.encryption).public_key(),
    )


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    create_ca(tmp_path / "ca", "acme")
    return tmp_path / "ca"


@pytest.fixture
def certified(ca_dir: Path, tmp_path: Path) -> Certified:
    files = generate_keys(tmp_path / "keys")
    signing_pem, encryption_pem = certify(ca_dir, _request(files), identity=SITE)
    return Certified(
        ca_pem=(ca_dir / "ca.pem").read_bytes(),
        files=files,
        signing_pem=signing_pem,
        encryption_pem=encryption_pem,
    )


# Generating and loading keys ----------------------------------------------------------


def test_generate_keys_writes_private_files_readable_by_the_owner_only(tmp_path: Path) -> None:
    files = generate_keys(tmp_path / "keys")
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(files.signing) == 0o600
    assert _mode(files.encryption) == 0o600
    assert b"BEGIN PRIVATE KEY" in files.signing.read_bytes()
    assert isinstance(load_signing_key(files.signing), ed25519.Ed25519PrivateKey)
    assert isinstance(load_encryption_key(files.encryption), x25519.X25519PrivateKey)


def test_generate_keys_refuses_to_overwrite(tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    before = files.signing.read_bytes()
    with pytest.raises(PkiError, match="already exists; refusing to overwrite a private key"):
        generate_keys(tmp_path)
    assert files.signing.read_bytes() == before


def test_loading_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    with pytest.raises(PkiError, match=r"signing key .*encryption\.key is not an Ed25519 key"):
        load_signing_key(files.encryption)
    with pytest.raises(PkiError, match=r"encryption key .*signing\.key is not an X25519 key"):
        load_encryption_key(files.signing)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    with pytest.raises(PkiError, match="is not an unencrypted PEM private key"):
        load_signing_key(garbage)
    with pytest.raises(PkiError, match=r"cannot read signing key .*missing\.key"):
        load_signing_key(tmp_path / "missing.key")


def test_fingerprint_is_the_sha256_of_the_raw_public_key() -> None:
    # RFC 8032, section 7.1, test 1.
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(secret).public_key()
    assert fingerprint(key) == hashlib.sha256(public).hexdigest()


# Requests and certification -----------------------------------------------------------


def test_the_request_holds_public_keys_only(tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    request = _request(files)
    csr = x509.load_pem_x509_csr(request)
    assert csr.is_signature_valid
    assert csr.public_key() == load_signing_key(files.signing).public_key()
    x_der = csr.extensions.get_extension_for_oid(X25519_REQUEST_OID).value
    assert isinstance(x_der, x509.UnrecognizedExtension)
    assert serialization.load_der_public_key(x_der.value) == (
        load_encryption_key(files.encryption).public_key()
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    assert load_signing_key(files.signing).private_bytes_raw() not in der
    assert load_encryption_key(files.encryption).private_bytes_raw() not in der


def test_certify_issues_two_application_certificates(certified: Certified) -> None:
    ca = x509.load_pem_x509_certificate(certified.ca_pem)
    for pem, key_type, signing, eku in (
        (certified.signing_pem, ed25519.Ed25519PublicKey, True, SIGNING_EKU_OID),
        (certified.encryption_pem, x25519.X25519PublicKey, False, ENCRYPTION_EKU_OID),
    ):
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)
        assert isinstance(cert.public_key(), key_type)
        exts = cert.extensions
        sans = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(sans) == [x509.UniformResourceIdentifier(SITE.spiffe_id)]
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SITE.name
        assert exts.get_extension_for_class(x509.BasicConstraints).value.ca is False
        usage = exts.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.digital_signature is signing
        assert usage.value.key_agreement is not signing
        assert not usage.value.key_encipherment
        assert not usage.value.key_cert_sign
        usages = list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == [eku]
        assert ExtendedKeyUsageOID.SERVER_AUTH not in usages
        assert ExtendedKeyUsageOID.CLIENT_AUTH not in usages


def test_verify_party_keys_returns_the_partys_own_keys(certified: Certified) -> None:
    party = verify_party_keys(
        certified.ca_pem, certified.signing_pem, certified.encryption_pem, SITE
    )
    assert party.identity == SITE
    assert party.signing_key == load_signing_key(certified.files.signing).public_key()
    assert party.encryption_key == load_encryption_key(certified.files.encryption).public_key()


def test_certify_refuses_a_request_for_another_identity(ca_dir: Path, tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    with pytest.raises(PkiError, match=r"the key request names .*st-john.*not exactly .*st-mary"):
        certify(ca_dir, _request(files, OTHER), identity=SITE)


def test_certify_refuses_another_federation(ca_dir: Path, tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    stranger = Identity(federation="evil", kind="site", name="st-mary")
    with pytest.raises(PkiError, match="is for federation 'acme'"):
        certify(ca_dir, _request(files, stranger), identity=stranger)


def test_certify_refuses_a_tampered_request(ca_dir: Path, tmp_path: Path) -> None:
    files = generate_keys(tmp_path)
    csr = x509.load_pem_x509_csr(_request(files))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-10] ^= 1  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="not signed by an Ed25519 key"):
        certify(ca_dir, tampered, identity=SITE)


def test_certify_refuses_garbage_and_non_ed25519_requests(ca_dir: Path) -> None:
    with pytest.raises(PkiError, match="not a valid PEM certificate signing request"):
        certify(ca_dir, b"garbage", identity=SITE)
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SITE.spiffe_id)]),
            critical=False,
        )
        .sign(ecdsa, hashes.SHA256())
    )
    with pytest.raises(PkiError, match="not signed by an Ed25519 key"):
        certify(ca_dir, csr.public_bytes(serialization.Encoding.PEM), identity=SITE)


def test_certify_refuses_a_request_without_an_encryption_key(ca_dir: Path) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SITE.spiffe_id)]),
            critical=False,
        )
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    with pytest.raises(PkiError, match=f"lacks the {X25519_REQUEST_OID.dotted_string} extension"):
        certify(ca_dir, csr.public_bytes(serialization.Encoding.PEM), identity=SITE)


def test_certify_refuses_an_encryption_key_of_another_type(ca_dir: Path) -> None:
    spki = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SITE.spiffe_id)]),
            critical=False,
        )
        .add_extension(x509.UnrecognizedExtension(X25519_REQUEST_OID, spki), critical=False)
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    with pytest.raises(PkiError, match="encryption key is not an X25519 key"):
        certify(ca_dir, csr.public_bytes(serialization.Encoding.PEM), identity=SITE)


def test_certify_needs_the_ca_key(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="cannot read CA certificate"):
        certify(tmp_path / "nowhere", b"", identity=SITE)


# The sender's checks -------------------------------------------------------------------


def test_a_foreign_ca_is_refused(certified: Certified, tmp_path: Path) -> None:
    create_ca(tmp_path / "foreign", "acme")
    foreign = (tmp_path / "foreign" / "ca.pem").read_bytes()
    with pytest.raises(PkiError, match="was not issued by the pinned CA"):
        verify_party_keys(foreign, certified.signing_pem, certified.encryption_pem, SITE)


def test_another_identity_is_refused(certified: Certified) -> None:
    with pytest.raises(PkiError, match="does not name exactly spiffe://acme/site/st-john"):
        verify_party_keys(certified.ca_pem, certified.signing_pem, certified.encryption_pem, OTHER)


def test_another_federation_is_refused(certified: Certified) -> None:
    stranger = Identity(federation="evil", kind="site", name="st-mary")
    with pytest.raises(PkiError, match="outside federation 'acme'"):
        verify_party_keys(
            certified.ca_pem, certified.signing_pem, certified.encryption_pem, stranger
        )


def test_swapped_certificates_are_refused(certified: Certified) -> None:
    with pytest.raises(PkiError, match=r"signing certificate .* wrong key usage"):
        verify_party_keys(certified.ca_pem, certified.encryption_pem, certified.signing_pem, SITE)


def test_a_tls_certificate_is_not_an_application_certificate(
    certified: Certified, ca_dir: Path, tmp_path: Path
) -> None:
    tls = issue(ca_dir, tmp_path / "tls", SITE)
    with pytest.raises(PkiError, match="is not a Baton signing certificate"):
        verify_party_keys(certified.ca_pem, tls.cert.read_bytes(), certified.encryption_pem, SITE)


@pytest.mark.parametrize(
    ("offset", "problem"),
    [(dt.timedelta(days=400), "expired on"), (dt.timedelta(days=-1), "is not valid before")],
)
def test_certificates_outside_their_validity_are_refused(
    certified: Certified, offset: dt.timedelta, problem: str
) -> None:
    when = dt.datetime.now(dt.UTC) + offset
    with pytest.raises(PkiError, match=problem):
        verify_party_keys(
            certified.ca_pem, certified.signing_pem, certified.encryption_pem, SITE, now=when
        )


def test_garbage_certificates_are_refused(certified: Certified) -> None:
    with pytest.raises(PkiError, match=r"signing certificate of .* is not a valid PEM"):
        verify_party_keys(certified.ca_pem, b"junk", certified.encryption_pem, SITE)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_verifies_the_chain_but_not_for_tls(certified: Certified, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certified.ca_pem)
    for name, pem in (("signing", certified.signing_pem), ("encryption", certified.encryption_pem)):
        leaf = tmp_path / f"{name}.pem"
        leaf.write_bytes(pem)
        ok = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca), str(leaf)],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        for purpose in ("sslclient", "sslserver"):
            tls = subprocess.run(
                ["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca), str(leaf)],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            assert tls.returncode != 0, f"{name} certificate accepted for {purpose}"
