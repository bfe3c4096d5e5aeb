"""The federation CRL: issuing, verifying, staleness, tampering, and the reloading watcher."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from baton import exit_codes
from baton.errors import PkiError
from baton.security.pki import Identity, create_ca, issue
from baton.security.revocation import CrlWatcher, issue_crl, load_crl, revoke

with warnings.catch_warnings():
    # typer 0.20 re-exports click helpers that click 8.5 deprecates, warning at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from typer.testing import CliRunner

    from owner.cli_pki import pki_app

if TYPE_CHECKING:
    from pathlib import Path

_PLAIN = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}


@dataclass(frozen=True)
class Fed:
    """A CA with two site certificates, and where its CRL goes."""

    ca_dir: Path
    crl: Path
    a: bytes
    b: bytes

    @property
    def ca_pem(self) -> bytes:
        return (self.ca_dir / "ca.pem").read_bytes()


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture
def fed(tmp_path: Path) -> Fed:
    create_ca(tmp_path / "ca", "acme")
    pems = []
    for name in ("st-mary", "st-john"):
        files = issue(
            tmp_path / "ca", tmp_path / name, Identity(federation="acme", kind="site", name=name)
        )
        pems.append(files.cert.read_bytes())
    return Fed(ca_dir=tmp_path / "ca", crl=tmp_path / "crl.pem", a=pems[0], b=pems[1])


def _hand_signed_crl(
    ca_dir: Path, *, last: dt.datetime, next_: dt.datetime | None, number: int | None = 1
) -> bytes:
    """A CRL signed by the CA in ``ca_dir`` with exactly the given dates and number."""
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(last)
    if next_ is not None:
        builder = builder.next_update(next_)
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_revoked_certificate_is_listed_by_pem_and_by_serial(fed: Fed) -> None:
    revoke(fed.ca_dir, fed.crl, fed.a, reason="keyCompromise")
    crl = load_crl(fed.crl, fed.ca_pem)
    assert crl.serials == {_serial(fed.a)}
    assert crl.is_revoked(fed.a)
    assert crl.is_revoked(fed.a.decode())
    assert crl.is_revoked(_serial(fed.a))
    assert not crl.is_revoked(fed.b)
    assert not crl.is_revoked(_serial(fed.b))
    now = dt.datetime.now(dt.UTC)
    assert crl.last_update <= now < crl.next_update
    assert crl.next_update - crl.last_update == dt.timedelta(days=30)
    # A standard X.509 CRL: the entry carries the reason, the CRL its number and AKI.
    parsed = x509.load_pem_x509_crl(fed.crl.read_bytes())
    entry = parsed.get_revoked_certificate_by_serial_number(_serial(fed.a))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_each_new_crl_has_a_higher_number_and_keeps_earlier_entries(fed: Fed) -> None:
    revoke(fed.ca_dir, fed.crl, fed.a)
    first = load_crl(fed.crl, fed.ca_pem)
    revoke(fed.ca_dir, fed.crl, fed.b, days=2)
    second = load_crl(fed.crl, fed.ca_pem)
    revoke(fed.ca_dir, fed.crl, fed.b)  # already listed: refreshed, not duplicated
    third = load_crl(fed.crl, fed.ca_pem)
    assert (first.number, second.number, third.number) == (1, 2, 3)
    assert second.serials == third.serials == {_serial(fed.a), _serial(fed.b)}
    assert len(list(x509.load_pem_x509_crl(fed.crl.read_bytes()))) == 2
    assert second.next_update - second.last_update == dt.timedelta(days=2)
    refreshed = issue_crl(fed.ca_dir, fed.crl)
    assert (refreshed.number, refreshed.serials) == (4, third.serials)
    assert load_crl(fed.crl, fed.ca_pem) == refreshed


def test_an_empty_crl_revokes_nothing(fed: Fed) -> None:
    crl = issue_crl(fed.ca_dir, fed.crl)
    assert (crl.number, crl.serials) == (1, frozenset())
    assert not load_crl(fed.crl, fed.ca_pem).is_revoked(fed.a)


def test_a_crl_from_another_ca_is_rejected(fed: Fed, tmp_path: Path) -> None:
    # Same federation name, so the same issuer name; only the key differs.
    create_ca(tmp_path / "other", "acme")
    revoke(fed.ca_dir, fed.crl, fed.a)
    with pytest.raises(PkiError, match=r"crl\.pem was not signed by the federation CA"):
        load_crl(fed.crl, (tmp_path / "other" / "ca.pem").read_bytes())
    # Nor may another CA's key extend this CA's CRL, or revoke this CA's certificates.
    with pytest.raises(PkiError, match=r"existing CRL .* was not signed by the federation CA"):
        issue_crl(tmp_path / "other", fed.crl)
    with pytest.raises(PkiError, match="was not issued by the CA in"):
        revoke(tmp_path / "other", tmp_path / "other-crl.pem", fed.b)
    assert not (tmp_path / "other-crl.pem").exists()


def test_a_stale_crl_is_rejected(fed: Fed) -> None:
    now = dt.datetime.now(dt.UTC)
    fed.crl.write_bytes(
        _hand_signed_crl(fed.ca_dir, last=now - dt.timedelta(days=8), next_=now - dt.timedelta(1))
    )
    stale = r"crl\.pem: CRL number 1 went stale on .* UTC; .*\(baton pki crl\)$"
    with pytest.raises(PkiError, match=stale):
        load_crl(fed.crl, fed.ca_pem)
    # The CA operator can still renew it.
    revoke(fed.ca_dir, fed.crl, fed.a)
    assert load_crl(fed.crl, fed.ca_pem).number == 2
    # A fresh CRL is judged stale at a time past its next update.
    with pytest.raises(PkiError, match="went stale"):
        load_crl(fed.crl, fed.ca_pem, now=now + dt.timedelta(days=31))


def test_a_crl_without_a_number_or_issued_in_the_future_is_rejected(fed: Fed) -> None:
    # (cryptography cannot build a CRL without a next update, so that check goes untested.)
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(days=2)
    fed.crl.write_bytes(_hand_signed_crl(fed.ca_dir, last=now, next_=later, number=None))
    with pytest.raises(PkiError, match="has no CRL number"):
        load_crl(fed.crl, fed.ca_pem)
    tomorrow = now + dt.timedelta(days=1)
    fed.crl.write_bytes(_hand_signed_crl(fed.ca_dir, last=tomorrow, next_=later))
    with pytest.raises(PkiError, match="is not valid before"):
        load_crl(fed.crl, fed.ca_pem)


def test_a_tampered_crl_is_rejected(fed: Fed) -> None:
    revoke(fed.ca_dir, fed.crl, fed.a)
    revoke(fed.ca_dir, fed.crl, fed.b)
    der = bytearray(x509.load_pem_x509_crl(fed.crl.read_bytes()).public_bytes(
        serialization.Encoding.DER
    ))  # fmt: skip
    # Change one byte of the first revoked serial (un-revoking a certificate).
    serial = _serial(fed.a).to_bytes(20, "big").lstrip(b"\0")
    at = bytes(der).index(serial)
    der[at + 5] ^= 0x01
    fed.crl.write_bytes(bytes(der))
    with pytest.raises(PkiError, match="was not signed by the federation CA"):
        load_crl(fed.crl, fed.ca_pem)
    fed.crl.write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    with pytest.raises(PkiError, match="is not a valid PEM or DER certificate revocation list"):
        load_crl(fed.crl, fed.ca_pem)
    fed.crl.unlink()
    with pytest.raises(PkiError, match=r"cannot read CRL .*crl\.pem"):
        load_crl(fed.crl, fed.ca_pem)


def test_revoke_refuses_an_unknown_reason(fed: Fed) -> None:
    with pytest.raises(PkiError, match="unknown revocation reason 'certificateHold'"):
        revoke(fed.ca_dir, fed.crl, fed.a, reason="certificateHold")
    assert not fed.crl.exists()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watcher_reloads_a_replaced_crl(fed: Fed, caplog: pytest.LogCaptureFixture) -> None:
    issue_crl(fed.ca_dir, fed.crl)
    first = fed.crl.read_bytes()
    clock = _Clock()
    watcher = CrlWatcher(fed.crl, fed.ca_pem, interval=10.0, clock=clock)
    assert not watcher.is_revoked(fed.a)
    revoke(fed.ca_dir, fed.crl, fed.a)
    clock.now = 9.0
    assert not watcher.is_revoked(fed.a), "looked at the file before the interval passed"
    clock.now = 10.0
    assert watcher.is_revoked(fed.a)
    assert watcher.crl.number == 2
    revoke(fed.ca_dir, fed.crl, fed.b)
    newer = fed.crl.read_bytes()
    # A bad replacement is reported once and the last good CRL stays in force.
    fed.crl.write_bytes(b"garbage")
    caplog.set_level(logging.WARNING, logger="baton.security.revocation")
    for step in (20.0, 30.0):
        clock.now = step
        assert watcher.is_revoked(fed.a)
        assert not watcher.is_revoked(fed.b)
    assert [r.getMessage() for r in caplog.records] == [
        f"keeping CRL number 2: CRL {fed.crl} is not a valid PEM or DER certificate revocation list"
    ]
    fed.crl.unlink()
    clock.now = 40.0
    assert watcher.is_revoked(fed.a)
    # Nor may an older CRL of the same CA, which lacks the latest revocations, come back.
    fed.crl.write_bytes(first)
    clock.now = 50.0
    assert watcher.is_revoked(fed.a)
    assert caplog.records[-1].getMessage() == (
        f"keeping CRL number 2: CRL {fed.crl} has number 1, older than the one in force"
    )
    # Once a good, newer CRL is back, it is loaded.
    fed.crl.write_bytes(newer)
    clock.now = 60.0
    assert watcher.is_revoked(fed.b)
    assert watcher.is_revoked(fed.a)
    assert watcher.crl.number == 3


def test_the_watcher_needs_its_file_and_refuses_a_stale_crl(fed: Fed) -> None:
    with pytest.raises(PkiError, match="cannot read CRL"):
        CrlWatcher(fed.crl, fed.ca_pem)
    now = dt.datetime.now(dt.UTC)
    fed.crl.write_bytes(
        _hand_signed_crl(fed.ca_dir, last=now - dt.timedelta(days=2), next_=now - dt.timedelta(1))
    )
    with pytest.raises(PkiError, match="went stale"):
        CrlWatcher(fed.crl, fed.ca_pem)
    # A CRL that goes stale while in force refuses every check until a fresh one arrives.
    fed.crl.write_bytes(
        _hand_signed_crl(fed.ca_dir, last=now, next_=now + dt.timedelta(seconds=1), number=7)
    )
    watcher = CrlWatcher(fed.crl, fed.ca_pem, interval=0)
    assert not watcher.is_revoked(fed.a)
    stale_at = now + dt.timedelta(seconds=2)
    while dt.datetime.now(dt.UTC) < stale_at:
        threading.Event().wait(0.05)
    with pytest.raises(PkiError, match="CRL number 7 went stale"):
        watcher.is_revoked(fed.a)
    issue_crl(fed.ca_dir, fed.crl)
    assert not watcher.is_revoked(fed.a)
    assert watcher.crl.number == 8


def test_the_watcher_is_safe_across_threads(fed: Fed) -> None:
    issue_crl(fed.ca_dir, fed.crl)
    watcher = CrlWatcher(fed.crl, fed.ca_pem, interval=0)
    seen: list[bool] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def check() -> None:
        try:
            while not stop.is_set():
                seen.append(watcher.is_revoked(fed.a))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        issue_crl(fed.ca_dir, fed.crl)
    revoke(fed.ca_dir, fed.crl, fed.a)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert watcher.is_revoked(fed.a)
    assert watcher.crl.number == 7


def test_cli_revokes_a_certificate(fed: Fed, tmp_path: Path) -> None:
    runner = CliRunner(env=_PLAIN)
    cert = tmp_path / "st-mary" / "st-mary.pem"
    args = ["revoke", "--ca", str(fed.ca_dir), "--cert", str(cert), "--crl", str(fed.crl)]
    result = runner.invoke(pki_app, [*args, "--reason", "keyCompromise"])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"revoked serial {_serial(fed.a):x} (keyCompromise)",
        f"  CRL  {fed.crl}  (fresh for 30 days)",
    ]
    assert load_crl(fed.crl, fed.ca_pem).is_revoked(fed.a)
    result = runner.invoke(pki_app, ["crl", "--ca", str(fed.ca_dir), "--crl", str(fed.crl)])
    assert result.exit_code == 0
    assert result.stdout.startswith("issued CRL number 2 (1 revoked, fresh until ")


def test_cli_reports_a_revocation_error_in_one_line(fed: Fed, tmp_path: Path) -> None:
    runner = CliRunner(env=_PLAIN)
    missing = tmp_path / "nope.pem"
    result = runner.invoke(
        pki_app,
        ["revoke", "--ca", str(fed.ca_dir), "--cert", str(missing), "--crl", str(fed.crl)],
    )
    assert result.exit_code == exit_codes.CLI_PKI
    assert result.stderr == f"error: cannot read certificate {missing}: No such file or directory\n"
    assert "Traceback" not in result.output
    result = runner.invoke(
        pki_app,
        ["revoke", "--ca", str(fed.ca_dir), "--cert", str(missing), "--crl", str(fed.crl),
         "--reason", "certificateHold"],
    )  # fmt: skip
    assert result.exit_code == exit_codes.USAGE
