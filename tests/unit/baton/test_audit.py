"""The signed, hash-chained audit log: round trips, resumption, and every kind of tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import threading
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from typer.testing import CliRunner

from baton import exit_codes
from baton.entry import make_app
from baton.errors import AuditError, PkiError
from baton.security.audit import (
    GENESIS,
    AuditEntry,
    AuditLog,
    AuditSigningKey,
    key_fingerprint,
    load_public_key,
    verify_log,
)
from baton.security.pki import load_private_key
from owner.cli_verify import register

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Pki

SITE = "spiffe://testfed/site/site-a"
NOW = 1_800_000_000_000
DIGEST = hashlib.sha256(b"a manifest").hexdigest()
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(params=["ed25519", "ecdsa"])
def key(request: pytest.FixtureRequest, pki: Pki) -> AuditSigningKey:
    """A site's Ed25519 signing key, or the coordinator's ECDSA P-256 TLS key."""
    if request.param == "ed25519":
        return pki.keys("site-a").signing_key
    return load_private_key(pki.files("coordinator").key.read_bytes(), source="tls key")


def write_log(path: Path, key: AuditSigningKey, count: int = 5) -> list[AuditEntry]:
    with AuditLog(path, party=SITE, signing_key=key, clock=lambda: NOW) as log:
        return [
            log.append("hop_sent", run_id="run-1", hop=i, detail={"manifest": DIGEST, "n": i})
            for i in range(count)
        ]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def tamper(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(change(lines(path))))


def parse(line: bytes) -> AuditEntry:
    return AuditEntry(**json.loads(line))


def line_of(entry: AuditEntry) -> bytes:
    return entry.canonical() + b"\n"


def resign(line: bytes, signer: ed25519.Ed25519PrivateKey, **changes: object) -> bytes:
    entry = dataclasses.replace(parse(line), **changes)  # type: ignore[arg-type]
    return line_of(dataclasses.replace(entry, sig=signer.sign(entry.signed_bytes()).hex()))


def test_round_trip_and_resume(tmp_path: Path, key: AuditSigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_log(path, key, count=3)
    assert [e.seq for e in first] == [1, 2, 3]
    assert first[0].prev == GENESIS
    assert [e.prev for e in first[1:]] == [e.digest for e in first[:-1]]
    assert first[1].detail == {"manifest": DIGEST, "n": 1}
    assert first[0].key == key_fingerprint(key.public_key())
    assert [parse(raw) for raw in lines(path)] == first
    assert lines(path)[0].startswith(b'{"detail":{"manifest":"')  # canonical: sorted, compact

    report = verify_log(path, public_key=key.public_key())
    assert (report.ok, report.entries, report.first_break, report.line) == (True, 3, None, None)
    assert report.head == first[-1].digest
    assert report.last == first[-1]

    with AuditLog(path, party=SITE, signing_key=key, clock=lambda: NOW + 1) as log:
        resumed = log.append("hop_received", run_id="run-1", hop=3)
    assert (resumed.seq, resumed.prev, resumed.time_ms, resumed.detail) == (
        4,
        first[-1].digest,
        NOW + 1,
        {},
    )
    report = verify_log(path, public_key=key.public_key(), party=SITE)
    assert (report.ok, report.entries, report.head) == (True, 4, resumed.digest)


def test_an_empty_or_new_log_verifies_with_no_entries(tmp_path: Path, pki: Pki) -> None:
    key = pki.keys("site-a").signing_key
    path = tmp_path / "audit.jsonl"
    AuditLog(path, party=SITE, signing_key=key).close()
    assert path.read_bytes() == b""
    report = verify_log(path, public_key=key.public_key())
    assert (report.ok, report.entries, report.head, report.last) == (True, 0, GENESIS, None)


def _insert_from_another_log(tmp_path: Path, key: ed25519.Ed25519PrivateKey) -> bytes:
    other = tmp_path / "other.jsonl"
    with AuditLog(other, party=SITE, signing_key=key, clock=lambda: NOW) as log:
        for _ in range(3):
            log.append("key_event", detail={"what": "rotation"})
    return lines(other)[2]  # seq 3, chained to the other log's line 2


TAMPERING: dict[str, tuple[Callable[[list[bytes], Pki, Path], list[bytes]], str, int]] = {
    "edited field": (
        lambda ls, _p, _t: [*ls[:2], ls[2].replace(b'"n":2', b'"n":7'), *ls[3:]],
        "line 3: bad signature",
        2,
    ),
    "edited run id": (
        lambda ls, _p, _t: [ls[0], ls[1].replace(b'"run-1"', b'"run-2"'), *ls[2:]],
        "line 2: bad signature",
        1,
    ),
    "deleted line": (lambda ls, _p, _t: [*ls[:2], *ls[3:]], "line 3: seq 4 follows 2", 2),
    "reordered lines": (
        lambda ls, _p, _t: [ls[0], ls[2], ls[1], *ls[3:]],
        "line 2: seq 3 follows 1",
        1,
    ),
    "first two swapped": (
        lambda ls, _p, _t: [ls[1], ls[0], *ls[2:]],
        "line 1: seq 2, but the first entry is seq 1",
        0,
    ),
    "truncated last line": (
        lambda ls, _p, _t: [*ls[:4], ls[4][:40]],
        "line 5: truncated (no newline)",
        4,
    ),
    "last newline cut": (
        lambda ls, _p, _t: [*ls[:4], ls[4][:-1]],
        "line 5: truncated (no newline)",
        4,
    ),
    "forged signature with another key": (
        lambda ls, p, _t: [*ls[:2], resign(ls[2], p.keys("site-b").signing_key), *ls[3:]],
        "line 3: bad signature",
        2,
    ),
    "inserted line from another log": (
        lambda ls, p, t: [*ls[:2], _insert_from_another_log(t, p.keys("site-a").signing_key)],
        "line 3: prev does not match line 2",
        2,
    ),
    "inserted duplicate": (
        lambda ls, _p, _t: [*ls[:2], ls[1], *ls[2:]],
        "line 3: seq 2 follows 2",
        2,
    ),
    "not JSON": (lambda ls, _p, _t: [*ls[:3], b"{oops\n", *ls[4:]], "line 4: not JSON", 3),
    "blank line": (lambda ls, _p, _t: [*ls[:3], b"\n", *ls[3:]], "line 4: not JSON", 3),
    "not canonical": (
        lambda ls, _p, _t: [ls[0], ls[1].replace(b'{"detail"', b'{ "detail"'), *ls[2:]],
        "line 2: not canonical JSON",
        1,
    ),
    "field removed": (
        lambda ls, _p, _t: [
            ls[0],
            json.dumps(
                {k: v for k, v in json.loads(ls[1]).items() if k != "hop"},
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
            + b"\n",
            *ls[2:],
        ],
        "line 2: malformed entry: missing ['hop'], unexpected []",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_gives_the_exact_first_break(tmp_path: Path, pki: Pki, case: str) -> None:
    change, expected, intact = TAMPERING[case]
    key = pki.keys("site-a").signing_key
    path = tmp_path / "audit.jsonl"
    entries = write_log(path, key)
    tamper(path, lambda ls: change(ls, pki, tmp_path))

    report = verify_log(path, public_key=key.public_key())
    assert not report.ok
    assert report.first_break == expected
    assert report.line == int(expected.split(":")[0].removeprefix("line "))
    assert report.entries == intact
    assert report.head == (entries[intact - 1].digest if intact else GENESIS)

    if expected.endswith("truncated (no newline)"):
        # A partial last line (an entry whose write never completed) is cut off on open.
        AuditLog(path, party=SITE, signing_key=key).close()
        repaired = verify_log(path, public_key=key.public_key())
        assert (repaired.ok, repaired.entries, repaired.head) == (True, intact, report.head)
        return
    with pytest.raises(AuditError, match="refusing to append") as err:
        AuditLog(path, party=SITE, signing_key=key)
    assert err.value.message.endswith(expected)


def test_entry_rewritten_under_another_key_names_that_key(tmp_path: Path, pki: Pki) -> None:
    key, forger = pki.keys("site-a").signing_key, pki.keys("site-b").signing_key
    path = tmp_path / "audit.jsonl"
    write_log(path, key)
    forged_key = key_fingerprint(forger.public_key())
    tamper(path, lambda ls: [*ls[:2], resign(ls[2], forger, key=forged_key), *ls[3:]])
    report = verify_log(path, public_key=key.public_key())
    assert report.first_break == f"line 3: signed by another key ({forged_key[:16]}...)"
    # Verifying with the wrong key fails on line 1.
    report = verify_log(path, public_key=forger.public_key())
    assert report.first_break is not None
    assert report.first_break.startswith("line 1: signed by another key")


def test_ecdsa_signatures_must_be_canonical_low_s(tmp_path: Path, pki: Pki) -> None:
    key = load_private_key(pki.files("coordinator").key.read_bytes(), source="tls key")
    path = tmp_path / "audit.jsonl"
    write_log(path, key, count=3)
    entry = parse(lines(path)[1])
    r, s = decode_dss_signature(bytes.fromhex(entry.sig))
    assert s <= P256_ORDER // 2
    high = encode_dss_signature(r, P256_ORDER - s)
    key.public_key().verify(high, entry.signed_bytes(), ec.ECDSA(hashes.SHA256()))
    tamper(path, lambda ls: [ls[0], line_of(dataclasses.replace(entry, sig=high.hex())), ls[2]])
    assert verify_log(path, public_key=key.public_key()).first_break == "line 2: bad signature"


def test_another_party_cannot_continue_the_log(tmp_path: Path, pki: Pki) -> None:
    key = pki.keys("site-a").signing_key
    path = tmp_path / "audit.jsonl"
    write_log(path, key, count=2)
    other = "spiffe://testfed/site/site-b"
    with pytest.raises(AuditError) as err:
        AuditLog(path, party=other, signing_key=key)
    assert err.value.message.endswith(f"line 1: party {SITE} is not {other}")
    # A line naming another party, even signed by the right key, breaks the log.
    tamper(path, lambda ls: [ls[0], resign(ls[1], key, party=other)])
    report = verify_log(path, public_key=key.public_key())
    assert report.first_break == f"line 2: party {other} differs from line 1"
    with pytest.raises(AuditError, match="line 1: signed by another key"):
        AuditLog(path, party=SITE, signing_key=pki.keys("site-b").signing_key)


def test_file_mode_is_0600_even_for_an_existing_file(tmp_path: Path, pki: Pki) -> None:
    key = pki.keys("site-a").signing_key
    path = tmp_path / "audit.jsonl"
    write_log(path, key, count=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    AuditLog(path, party=SITE, signing_key=key).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_appends_keep_seq_contiguous(tmp_path: Path, key: AuditSigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    seqs: list[int] = []
    with AuditLog(path, party=SITE, signing_key=key) as log:

        def worker(n: int) -> None:
            for i in range(25):
                seqs.append(log.append("hop_received", hop=n, detail={"i": i}).seq)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(seqs) == list(range(1, 201))
    assert [parse(raw).seq for raw in lines(path)] == list(range(1, 201))
    report = verify_log(path, public_key=key.public_key())
    assert (report.ok, report.entries) == (True, 200)


def test_one_writer_at_a_time_and_no_append_after_close(tmp_path: Path, pki: Pki) -> None:
    key = pki.keys("site-a").signing_key
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, party=SITE, signing_key=key)
    with pytest.raises(AuditError, match="open in another writer"):
        AuditLog(path, party=SITE, signing_key=key)
    log.append("run_created", run_id="run-1")
    log.close()
    with pytest.raises(AuditError, match="is closed"):
        log.append("run_created", run_id="run-2")
    with AuditLog(path, party=SITE, signing_key=key) as again:
        assert again.append("run_created", run_id="run-2").seq == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event": "Hop Sent"}, "event"),
        ({"event": "hop_sent", "hop": -1}, "hop"),
        ({"event": "hop_sent", "hop": True}, "hop"),
        ({"event": "hop_sent", "detail": {"nested": {"a": 1}}}, "not a string or a number"),
        ({"event": "hop_sent", "detail": {"flag": True}}, "not a string or a number"),
        ({"event": "hop_sent", "detail": {"x": float("nan")}}, "not finite"),
        ({"event": "hop_sent", "detail": {"blob": "x" * 513}}, "longer than 512"),
        ({"event": "hop_sent", "detail": {str(i): i for i in range(17)}}, "more than 16"),
    ],
)
def test_append_refuses_what_is_not_a_small_flat_record(
    tmp_path: Path, pki: Pki, kwargs: dict[str, object], match: str
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, party=SITE, signing_key=pki.keys("site-a").signing_key) as log:
        event = str(kwargs.pop("event"))
        with pytest.raises(ValueError, match=match):
            log.append(event, **kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == b""


def test_bad_party_or_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(AuditError, match="party"):
        AuditLog(tmp_path / "a", party="site-a", signing_key=pki.keys("site-a").signing_key)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(AuditError, match="P-256"):
        AuditLog(tmp_path / "b", party=SITE, signing_key=p384)


def test_unreadable_log_raises(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(AuditError, match="cannot read audit log"):
        verify_log(
            tmp_path / "missing.jsonl", public_key=pki.keys("site-a").signing_key.public_key()
        )


def test_public_key_loads_from_certificate_or_key_pem(tmp_path: Path, pki: Pki) -> None:
    site = pki.keys("site-a")
    from_cert = load_public_key(site.signing_cert_pem)
    assert key_fingerprint(from_cert) == key_fingerprint(site.signing_key.public_key())
    tls_cert = load_public_key(pki.files("coordinator").cert.read_bytes())
    tls_key = load_private_key(pki.files("coordinator").key.read_bytes(), source="tls key")
    assert key_fingerprint(tls_cert) == key_fingerprint(tls_key.public_key())
    spki = site.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_fingerprint(load_public_key(spki)) == key_fingerprint(from_cert)
    with pytest.raises(PkiError, match="not a PEM public key"):
        load_public_key(b"not pem")
    with pytest.raises(PkiError, match="Ed25519 or ECDSA P-256"):
        load_public_key(site.encryption_cert_pem)  # X25519 cannot sign


def test_verify_log_command(tmp_path: Path, pki: Pki) -> None:
    app = make_app("test")
    register(app)
    runner = CliRunner(env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    path = tmp_path / "audit.jsonl"
    entries = write_log(
        path, load_private_key(pki.files("coordinator").key.read_bytes(), source="k")
    )
    cert = pki.files("coordinator").cert
    result = runner.invoke(app, ["verify-log", str(path), "--key", str(cert)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == f"{path}: 5 entries, ok (head {entries[-1].digest})\n"

    tamper(path, lambda ls: [*ls[:2], *ls[3:]])
    result = runner.invoke(app, ["verify-log", str(path), "--key", str(cert)])
    assert result.exit_code == exit_codes.CLI_ERROR
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {path}: line 3: seq 4 follows 2 (2 entries verified before it)\n"
    )

    missing = tmp_path / "missing.pem"
    result = runner.invoke(app, ["verify-log", str(path), "--key", str(missing)])
    assert result.exit_code == exit_codes.CLI_PKI
    assert result.stderr == f"error: cannot read public key {missing}: No such file or directory\n"
    result = runner.invoke(app, ["verify-log", str(tmp_path / "nope"), "--key", str(cert)])
    assert result.exit_code == exit_codes.CLI_ERROR
    assert result.stderr.startswith("error: cannot read audit log")
    assert "Traceback" not in result.output
