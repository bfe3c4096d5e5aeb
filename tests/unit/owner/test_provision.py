"""``baton provision``: kits whose configs load, whose certificates name the right parties."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from baton import exit_codes
from baton.errors import ConfigError
from baton.plan import load_plan
from baton.security.pki import identity_from_certificate
from baton.security.sealing import AppKeys
from coordinator.config import load_coordinator_config
from owner.config import load_admin_config
from owner.provision import load_spec, provision
from site_node.config import load_site_config

SPEC = """
name = "acme"
sites = ["st-mary", "st-john"]
own_keys = ["st-john"]

[coordinator]
addresses = ["coord.acme.example", "10.0.0.5"]
port = 9443
"""


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_kits_hold_loadable_configs_and_the_right_certificates(tmp_path: Path) -> None:
    kits = provision(load_spec(_spec(tmp_path)), tmp_path / "out")
    coord = load_coordinator_config(kits.coordinator / "coordinator.toml")
    assert coord.listen == "0.0.0.0:9443"
    cert = x509.load_pem_x509_certificate(coord.tls.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coord.acme.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    coord.tls.load()  # chain, key match and validity

    site = load_site_config(kits.site("st-mary") / "site.toml")
    assert site.coordinator == "coord.acme.example:9443"
    assert site.tls.load().identity.spiffe_id == "spiffe://acme/site/st-mary"
    keys = AppKeys.load(site.keys_dir)
    assert identity_from_certificate(keys.signing_cert_pem).name == "st-mary"
    assert stat.S_IMODE((site.keys_dir / "signing.key").stat().st_mode) == 0o600

    admin = load_admin_config(kits.owner / "admin.toml")
    assert admin.tls.load().identity.spiffe_id == "spiffe://acme/admin/study-owner"
    AppKeys.load(admin.keys_dir)
    plan = load_plan(kits.owner / "plan.toml")
    assert plan.run.sites == ("st-mary", "st-john")
    assert not (kits.coordinator / "pki" / "ca.key").exists()


def test_a_site_with_its_own_keys_gets_the_request_step_not_keys(tmp_path: Path) -> None:
    kits = provision(load_spec(_spec(tmp_path)), tmp_path / "out")
    assert not (kits.site("st-john") / "keys").exists()
    readme = (kits.site("st-john") / "README.md").read_text(encoding="utf-8")
    assert "baton pki keygen --federation acme --kind site --name st-john --out keys" in readme
    assert "--name st-john" in (kits.ca / "README.md").read_text(encoding="utf-8")


def test_loopback_addresses_listen_on_loopback_only(tmp_path: Path) -> None:
    text = 'name = "lo"\nsites = ["a"]\n[coordinator]\naddresses = ["localhost", "127.0.0.1"]\n'
    kits = provision(load_spec(_spec(tmp_path, text)), tmp_path / "out")
    coord = load_coordinator_config(kits.coordinator / "coordinator.toml")
    assert coord.listen == "127.0.0.1:7443"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nsites = []\n[coordinator]\naddresses = ["h"]\n', "at least one site"),
        ('name = "x"\nsites = ["a"]\n[coordinator]\naddresses = []\n', "at least one DNS"),
        ('name = "x"\nsites = ["a", "a"]\n[coordinator]\naddresses = ["h"]\n', "a site twice"),
        (
            'name = "x"\nsites = ["a"]\nown_keys = ["b"]\n[coordinator]\naddresses = ["h"]\n',
            "'b', which is not one of the sites",
        ),
        ('name = "X Y"\nsites = ["a"]\n[coordinator]\naddresses = ["h"]\n', "'X Y' is not valid"),
        ('name = "x"\nsites = ["a"]\nsite = 1\n[coordinator]\naddresses = ["h"]\n', "'site'"),
    ],
)
def test_a_bad_description_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"federation\.toml") as info:
        load_spec(_spec(tmp_path, text))
    assert message in info.value.message


def test_the_command_refuses_an_existing_kit_without_a_traceback(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    cmd = [sys.executable, "-m", "owner.cli", "provision", str(spec), "--out", str(tmp_path / "k")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "site st-john" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == exit_codes.CLI_CONFIG
    assert "already exists; provision into a new directory" in again.stderr
    assert "Traceback" not in again.stderr


def test_the_loopback_example_provisions(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "loopback" / "federation.toml"
    kits = provision(load_spec(example), tmp_path / "fed")
    site = load_site_config(kits.site("hospital-1") / "site.toml")
    assert site.coordinator == "localhost:7443"
    assert load_coordinator_config(kits.coordinator / "coordinator.toml").listen == (
        "127.0.0.1:7443"
    )
