"""``baton bench hop``: a real coordinator, real sites as processes, a report in JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from owner.cli_bench import parse_size

BATON = [sys.executable, "-m", "owner.cli"]


@pytest.mark.e2e
def test_a_small_hop_is_measured_against_its_baselines(tmp_path: Path) -> None:
    out = tmp_path / "hop.json"
    done = subprocess.run(
        [*BATON, "bench", "hop", "--size", "1MiB", "--reps", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["size_bytes"] == 1 << 20
    assert set(report["stages"]) == {"seal", "upload", "complete", "relay_wait", "download", "open"}
    assert set(report["rss_above_idle_mib"]) == {"coordinator", "sender", "receiver"}
    assert report["hop_seconds"] >= sum(report["stages"].values()) - 1e-6
    expected = report["baseline_seconds"]["tcp"] / report["hop_seconds"]
    assert report["ratio_vs_tcp"] == pytest.approx(expected)
    assert "| Baton hop: seal " in done.stdout


@pytest.mark.parametrize(
    ("text", "size"), [("512MiB", 512 << 20), ("2GiB", 2 << 30), ("4096", 4096), ("3 KiB", 3072)]
)
def test_sizes_are_read_with_their_unit(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0MiB", "12MB", "-5MiB", "lots"])
def test_a_bad_size_is_refused_by_name(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a size such as 512MiB or 2GiB"):
        parse_size(text)
