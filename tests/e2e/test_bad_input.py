"""Bad input gets one clear line and a documented non-zero exit code, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from baton import exit_codes
from sim.localfed import LocalFederationLayout, provision, write_site_config
from sim.tasks import Partition

pytestmark = pytest.mark.e2e

GOOD_PLAN = """
[run]
name = "x"
sites = ["hospital-1"]

[model]
name = "mlp"

[task]
dataset = "breast_cancer"
"""


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out
    assert fragment in out


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed")
    provision(
        root, ["hospital-1"], dataset="breast_cancer", partition=Partition(kind="iid"), seed=0
    )
    admin = root / "admin.toml"
    admin.write_text(
        'coordinator = "127.0.0.1:1"\nkeys_dir = "owner/keys"\n[tls]\nca = "owner/pki/ca.pem"\n'
        'cert = "owner/pki/study-owner.pem"\nkey = "owner/pki/study-owner.key"\n'
    )
    return root


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            ('name = "mlp"', 'name = "resnet9000"'),
            "unknown model 'resnet9000' in 'model.name'; "
            "known: causal_lm, cnn, hf_causal_lm, logreg, mlp",
        ),
        (
            ('dataset = "breast_cancer"', 'dataset = "mnist"'),
            "unknown dataset 'mnist' in 'task.dataset'",
        ),
        (
            ("[task]", "[training]\nlearning_rate = 0.1\n\n[task]"),
            "unknown key 'training.learning_rate'",
        ),
        (('name = "x"', "name = x"), "malformed TOML"),
        # What would fail at hop 0 fails here: the model's own checks, run at submit.
        (
            ('name = "mlp"', 'name = "mlp"\nargs = { hidden = "wide" }'),
            "'model.args.hidden': model argument 'hidden' must be a non-empty list of integers",
        ),
        (
            ('name = "mlp"', 'name = "mlp"\nargs = { depth = 3 }'),
            "'model.args.depth': unknown argument 'depth' for model 'mlp'; known: hidden, dropout",
        ),
        (
            ('name = "mlp"', 'name = "logreg"\n\n[training]\nparallel_plan = "pp"'),
            "'training.parallel_plan' is 'pp', but model 'logreg' cannot be trained under it; "
            "plan pp trains: causal_lm, mlp",
        ),
        (
            ("[task]", "[training]\nmomentum = -0.5\n\n[task]"),
            "[training] 'momentum' must be in [0, 1), not -0.5",
        ),
        (
            ("[task]", '[training]\nparallel_plan = "ddp"\nproximal_mu = 0.5\n\n[task]'),
            "[training] 'parallel_plan' 'ddp' has no proximal penalty: set 'proximal_mu' to 0 "
            "or 'parallel_plan' to 'single'",
        ),
    ],
)
def test_bad_plan_is_refused_before_submission(
    fed_dir: Path, tmp_path: Path, edit: tuple[str, str], fragment: str
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(GOOD_PLAN.replace(*edit))
    proc = run_cli("owner.cli", "submit", str(plan), "--admin", str(fed_dir / "admin.toml"))
    assert_clean_error(proc, exit_codes.CLI_CONFIG, fragment)
    # One line that names the plan file first; the unreachable coordinator is never tried.
    assert f"error: {plan}: {fragment}" in proc.stderr
    assert "unreachable" not in proc.stderr


def test_submit_to_unreachable_coordinator(fed_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(GOOD_PLAN)
    proc = run_cli("owner.cli", "submit", str(plan), "--admin", str(fed_dir / "admin.toml"))
    assert_clean_error(proc, exit_codes.CLI_UNREACHABLE, "coordinator at 127.0.0.1:1 unreachable")


def test_coordinator_with_missing_certificate(fed_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{tmp_path / "state"}"\n[tls]\n'
        f'ca = "{fed_dir / "coordinator/pki/ca.pem"}"\ncert = "{tmp_path / "nope.pem"}"\n'
        f'key = "{fed_dir / "coordinator/pki/coordinator.key"}"\n'
    )
    proc = run_cli("coordinator.cli", "serve", "--config", str(cfg))
    assert_clean_error(proc, exit_codes.COORDINATOR_PKI, "nope.pem")


def test_coordinator_config_with_unknown_key(tmp_path: Path) -> None:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(
        'listen = "127.0.0.1:0"\nlisten_port = 5\n[tls]\nca = "a"\ncert = "b"\nkey = "c"\n'
    )
    proc = run_cli("coordinator.cli", "serve", "--config", str(cfg))
    assert_clean_error(proc, exit_codes.COORDINATOR_CONFIG, "unknown key 'listen_port'")


def test_site_retries_unreachable_coordinator_then_gives_up(fed_dir: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_site_config(LocalFederationLayout(root=fed_dir), "hospital-1", port)
    proc = run_cli("site_node.cli", "run", "--config", str(config), "--max-retries", "3")
    assert_clean_error(
        proc,
        exit_codes.SITE_UNREACHABLE,
        f"coordinator at 127.0.0.1:{port} unreachable after 3 attempts",
    )
    assert proc.stderr.count("retrying in") == 2


def test_site_with_missing_data_directory(fed_dir: Path, tmp_path: Path) -> None:
    site = fed_dir / "sites" / "hospital-1"
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        f'coordinator = "127.0.0.1:1"\ndata_dir = "{tmp_path / "no-data"}"\n'
        f'keys_dir = "{site / "keys"}"\n[tls]\n'
        f'ca = "{site / "pki/ca.pem"}"\ncert = "{site / "pki/hospital-1.pem"}"\n'
        f'key = "{site / "pki/hospital-1.key"}"\n'
    )
    proc = run_cli("site_node.cli", "run", "--config", str(cfg))
    assert_clean_error(proc, exit_codes.SITE_DATA, "no-data")


def test_site_without_its_keys(fed_dir: Path, tmp_path: Path) -> None:
    site = fed_dir / "sites" / "hospital-1"
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        f'coordinator = "127.0.0.1:1"\ndata_dir = "{site / "data"}"\n'
        f'keys_dir = "{tmp_path / "nokeys"}"\n[tls]\n'
        f'ca = "{site / "pki/ca.pem"}"\ncert = "{site / "pki/hospital-1.pem"}"\n'
        f'key = "{site / "pki/hospital-1.key"}"\n'
    )
    proc = run_cli("site_node.cli", "run", "--config", str(cfg))
    assert_clean_error(proc, exit_codes.SITE_PKI, "nokeys/signing.key")


def test_demo_rejects_bad_option() -> None:
    proc = run_cli("owner.cli", "demo", "--sites", "0")
    assert_clean_error(proc, exit_codes.CLI_CONFIG, "--sites must be between 1 and 16")


def test_worker_node_without_its_shared_directory(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    proc = run_cli("site_node.cli", "worker-node", "--shared-dir", str(missing))
    assert_clean_error(proc, exit_codes.SITE_CONFIG, f"the shared directory {missing}")
