"""Plan signatures, party key checks, and the two-step key certification commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from baton.errors import PkiError
from baton.ml.codec import schema_hash
from baton.security.pki import Identity
from baton.security.sealing import (
    AppKeys,
    check_owner,
    check_party,
    expected_previous,
    manifest_digest,
    plan_hash,
    sign_plan,
    verify_plan,
)
from owner.cli_pki import pki_app
from tests.conftest import FEDERATION, Pki

PLAN = '[run]\nname = "p"\nsites = ["site-a"]\n'


def test_signed_plan_verifies_and_hash_binds_text_and_signature(pki: Pki) -> None:
    owner = pki.keys("owner")
    party = check_owner(pki.ca_pem, owner.signing_cert_pem, owner.encryption_cert_pem)
    sig = sign_plan(PLAN, owner.signing_key)
    assert verify_plan(PLAN, sig, party) == plan_hash(PLAN, sig)
    assert plan_hash(PLAN, sig) != plan_hash(PLAN + " ", sig)
    with pytest.raises(PkiError, match="not signed"):
        verify_plan(PLAN, b"", party)
    with pytest.raises(PkiError, match="does not verify"):
        verify_plan(PLAN.replace("site-a", "site-z"), sig, party)
    with pytest.raises(PkiError, match="does not verify"):
        verify_plan(PLAN, sign_plan(PLAN, pki.keys("site-a").signing_key), party)


def test_site_keys_cannot_pass_for_the_owner(pki: Pki) -> None:
    site = pki.keys("site-a")
    with pytest.raises(PkiError, match="not a study owner"):
        check_owner(pki.ca_pem, site.signing_cert_pem, site.encryption_cert_pem)


def test_party_check_rejects_certificates_of_another_party(pki: Pki) -> None:
    a, b = pki.keys("site-a"), pki.keys("site-b")
    assert check_party(
        pki.ca_pem, a.signing_cert_pem, a.encryption_cert_pem, pki.identity("site-a")
    )
    with pytest.raises(PkiError, match="does not name exactly"):
        check_party(pki.ca_pem, b.signing_cert_pem, b.encryption_cert_pem, pki.identity("site-a"))
    # The TLS certificate is no application certificate.
    tls = pki.files("site-a").cert.read_bytes()
    with pytest.raises(PkiError):
        check_party(pki.ca_pem, tls, a.encryption_cert_pem, pki.identity("site-a"))


def test_chain_root_and_schema_hash() -> None:
    assert expected_previous("p" * 64, b"") == "p" * 64
    assert expected_previous("p" * 64, b"manifest") == manifest_digest(b"manifest")
    state = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    assert schema_hash(state) == schema_hash({"b": torch.ones(3), "w": torch.ones(2, 3)})
    assert schema_hash(state) != schema_hash({"w": torch.zeros(3, 2), "b": torch.zeros(3)})
    assert schema_hash(state) != schema_hash(
        {"w": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(3)}
    )


def test_keygen_then_certify_yields_usable_keys(pki: Pki, tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    args = ["--federation", FEDERATION, "--kind", "site", "--name", "site-x", "--out", str(keys)]
    result = runner.invoke(pki_app, ["keygen", *args])
    assert result.exit_code == 0, result.output
    assert (keys / "signing.key").stat().st_mode & 0o777 == 0o600
    request = keys / "key-request.pem"
    assert b"PRIVATE" not in request.read_bytes()
    result = runner.invoke(
        pki_app,
        ["certify", "--ca", str(pki.root / "ca"), "--request", str(request),
         "--kind", "site", "--name", "site-x", "--out", str(keys)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded = AppKeys.load(keys)
    site_x = Identity(federation=FEDERATION, kind="site", name="site-x")
    checked = check_party(pki.ca_pem, loaded.signing_cert_pem, loaded.encryption_cert_pem, site_x)
    assert (
        checked.encryption_key.public_bytes_raw()
        == loaded.encryption_key.public_key().public_bytes_raw()
    )
    # The CA operator certifies whom they checked, not whom the request claims.
    result = runner.invoke(
        pki_app,
        ["certify", "--ca", str(pki.root / "ca"), "--request", str(request),
         "--kind", "site", "--name", "site-y", "--out", str(tmp_path / "y")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "Traceback" not in result.output
