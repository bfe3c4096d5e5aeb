"""A site whose feature columns are permuted is named at ``baton submit``, and nothing runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from baton import exit_codes
from baton.ml.data import SCHEMA_FILE, TRAIN_FILE, VAL_FILE, Schema
from owner.client import AdminClient
from sim.localfed import provision, start, wait_until_online
from sim.procs import ProcessGroup
from sim.tasks import Partition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = ["hospital-1", "hospital-2", "hospital-3"]
PLAN = """
[run]
name = "misaligned"
sites = ["hospital-1", "hospital-2", "hospital-3"]

[model]
name = "logreg"

[task]
dataset = "wine"

[ordering]
strategy = "fixed"
"""


def swap_columns(data_dir: Path, i: int, j: int) -> None:
    """Swaps feature columns ``i`` and ``j`` in the site's CSV files and its schema, as a
    hospital exporting its columns in another order would (same width, same values)."""
    for name in (TRAIN_FILE, VAL_FILE):
        path = data_dir / name
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        for row in rows:
            row[i], row[j] = row[j], row[i]
        with path.open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)
    schema = json.loads((data_dir / SCHEMA_FILE).read_text(encoding="utf-8"))
    names = schema["feature_names"]
    names[i], names[j] = names[j], names[i]
    (data_dir / SCHEMA_FILE).write_text(json.dumps(schema), encoding="utf-8")


def schema_hash(data_dir: Path) -> str:
    path = data_dir / SCHEMA_FILE
    return Schema.from_json(path.read_text(encoding="utf-8"), source=str(path)).schema_hash()


def test_submit_names_the_site_whose_columns_are_swapped(tmp_path: Path) -> None:
    layout, _ = provision(
        tmp_path / "fed", SITES, dataset="wine", partition=Partition(kind="iid"), seed=2
    )
    swap_columns(layout.site_dir("hospital-2") / "data", 0, 1)
    good, swapped = (schema_hash(layout.site_dir(s) / "data") for s in ("hospital-1", "hospital-2"))
    assert good != swapped
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    pki = layout.owner_dir / "pki"
    with ProcessGroup() as group:
        port = start(layout, SITES, group)
        admin = tmp_path / "admin.toml"
        admin.write_text(
            f'coordinator = "127.0.0.1:{port}"\nkeys_dir = "{layout.owner_keys}"\n'
            f'[tls]\nca = "{pki / "ca.pem"}"\n'
            f'cert = "{pki / "study-owner.pem"}"\nkey = "{pki / "study-owner.key"}"\n'
        )
        with AdminClient(f"127.0.0.1:{port}", layout.admin_tls.load()) as client:
            wait_until_online(client, SITES, group)
            sub = subprocess.run(
                [sys.executable, "-m", "owner.cli", "submit", str(plan), "--admin", str(admin)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert sub.returncode == exit_codes.CLI_CONFIG, sub.stdout + sub.stderr
            assert "Traceback" not in sub.stderr
            assert (
                f"sites disagree on the data schema: hospital-1, hospital-3 hold schema "
                f"{good[:12]}; hospital-2 holds schema {swapped[:12]}; "
                "check that every site's feature columns and classes match"
            ) in sub.stderr
            assert client.list_runs() == []
