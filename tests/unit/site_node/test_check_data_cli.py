"""``site-node check-data``: the site's data gate offline, with a checklist and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from baton import exit_codes
from baton.ml.data import Schema, SiteData, Split, write_site_data

SCHEMA = Schema(task="tabular", feature_names=("a", "b"), num_classes=2, class_names=("no", "yes"))
CONFIG = """coordinator = "127.0.0.1:7443"
data_dir = "data"

[tls]
ca = "pki/ca.pem"
cert = "pki/site.pem"
key = "pki/site.key"
"""


def _split(n: int, seed: int) -> Split:
    x = np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)
    return Split(x=x, y=(x[:, 0] > 0).astype(np.int64))


def _site(tmp_path: Path, data: SiteData, extra: str = "") -> Path:
    """A site directory with ``data`` in ``data/`` and its config; returns the config."""
    write_site_data(tmp_path / "data", data, SCHEMA)
    config = tmp_path / "site.toml"
    config.write_text(CONFIG + extra, encoding="utf-8")
    return config


def check_data(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "site_node.cli", "check-data", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_good_data_passes_with_a_checklist(tmp_path: Path) -> None:
    proc = check_data(_site(tmp_path, SiteData(train=_split(40, 1), val=_split(10, 2))))

    assert proc.returncode == exit_codes.OK, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["ok", "schema:"],
        ["ok", "missing:"],
        ["ok", "size:"],
        ["ok", "duplicates:"],
        ["ok", "leakage:"],
        ["ok", "label_balance:"],
        ["ok", "ranges:"],
    ]
    assert "ok   size: 40 training examples (at least 1), 10 validation examples" in lines[2]
    assert lines[-1] == "verdict: pass (0 of 7 checks warn)"


def test_a_copied_validation_split_fails_with_the_gate_code(tmp_path: Path) -> None:
    train = _split(40, 1)
    data = SiteData(train=train, val=Split(x=train.x[:10], y=train.y[:10]))

    proc = check_data(_site(tmp_path, data))

    assert proc.returncode == exit_codes.SITE_DATA_GATE == 204
    assert (
        "FAIL leakage: 10 of 10 validation rows also in the training split "
        "(more than the 75% allowed)"
    ) in proc.stdout.splitlines()
    assert proc.stdout.splitlines()[-1] == "verdict: FAIL (1 of 7 checks failed)"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_the_site_config_sets_the_thresholds(tmp_path: Path) -> None:
    train, fresh = _split(40, 1), _split(9, 2)
    val = Split(x=np.concatenate([train.x[:1], fresh.x]), y=np.concatenate([train.y[:1], fresh.y]))
    data = SiteData(train=train, val=val)
    lenient = check_data(_site(tmp_path / "a", data))
    strict = check_data(_site(tmp_path / "b", data, "\n[data]\nmax_leaked_fraction = 0.0\n"))

    assert lenient.returncode == exit_codes.OK, lenient.stdout
    assert "warn leakage: 1 of 10 validation rows also in the training split" in lenient.stdout
    assert lenient.stdout.splitlines()[-1] == "verdict: pass (1 of 7 checks warn)"
    assert strict.returncode == exit_codes.SITE_DATA_GATE, strict.stdout
    assert "(more than the 0% allowed)" in strict.stdout


def test_unreadable_data_exits_with_the_data_code(tmp_path: Path) -> None:
    config = _site(tmp_path, SiteData(train=_split(40, 1), val=_split(10, 2)))
    (tmp_path / "data" / "val.csv").write_text("a,b,label\n0.5,oops,1\n", encoding="utf-8")

    proc = check_data(config)

    assert proc.returncode == exit_codes.SITE_DATA
    assert "val.csv: line 2, column 'b': not a number" in proc.stderr
    assert "oops" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_bad_threshold_exits_with_the_config_code(tmp_path: Path) -> None:
    data = SiteData(train=_split(40, 1), val=_split(10, 2))
    proc = check_data(_site(tmp_path, data, "\n[data]\nmax_duplicate_fraction = 2.0\n"))
    unknown = check_data(_site(tmp_path, data, "\n[data]\nmax_dupes = 0.1\n"))

    assert proc.returncode == exit_codes.SITE_CONFIG
    assert "'max_duplicate_fraction' must lie in [0, 1]" in proc.stderr
    assert unknown.returncode == exit_codes.SITE_CONFIG
    assert "unknown key 'data.max_dupes'" in unknown.stderr
