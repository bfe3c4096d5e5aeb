"""The coordinator refuses to start, or to reload, with a certificate that is not a
coordinator's: every client pins the coordinator's kind and would refuse it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from baton import exit_codes
from baton.errors import PkiError
from baton.security import pki_leaf
from baton.security.pki import Identity, issue
from baton.security.tls import TlsFiles
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from tests.conftest import FEDERATION, Pki

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0


def test_the_coordinator_command_refuses_a_sites_certificate(pki: Pki, tmp_path: Path) -> None:
    site = pki.files("site-a")
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{tmp_path / "state"}"\n[tls]\n'
        f'ca = "{site.ca}"\ncert = "{site.cert}"\nkey = "{site.key}"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "serve", "--config", str(config)],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == exit_codes.COORDINATOR_PKI, done.stderr
    assert done.stderr == (
        f"error: certificate {site.cert} names spiffe://testfed/site/site-a, a site's "
        "certificate; a coordinator needs a coordinator's certificate, the only kind its "
        "clients accept (baton pki issue --kind coordinator)\n"
    )
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_a_coordinators_certificate_without_the_server_purpose_is_refused(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_only = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    with monkeypatch.context() as patch:  # an old or hand-made certificate
        patch.setattr(pki_leaf, "purposes", lambda kind: client_only)
        issued = issue(
            pki.root / "ca",
            tmp_path / "pki",
            Identity(federation=FEDERATION, kind="coordinator", name="coordinator"),
        )
    files = TlsFiles(ca=pki.files("coordinator").ca, cert=issued.cert, key=issued.key)
    config = CoordinatorConfig(tls=files, listen="127.0.0.1:0", state_dir=tmp_path / "state")
    with pytest.raises(PkiError) as refused:
        CoordinatorServer(config, files.load())
    assert refused.value.message == (
        f"certificate {issued.cert} names spiffe://testfed/coordinator/coordinator but its "
        "extended key usage lacks serverAuth, which a coordinator's certificate needs; "
        "issue it again (baton pki issue --kind coordinator)"
    )
    assert not (tmp_path / "state").exists()
