"""The checked-in protobuf stubs match what the .proto sources generate today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "generated stubs are current (16 files)" in proc.stdout


def test_every_rpc_and_field_is_commented() -> None:
    for proto in sorted((ROOT / "proto" / "baton" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            is_rpc = stripped.startswith("rpc ")
            is_field = (
                stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("syntax", "package", "option", "//"))
                and not stripped.endswith("_UNSPECIFIED = 0;")
            )
            if is_rpc or is_field:
                assert lines[i - 1].strip().startswith("//"), (
                    f"{proto.name}:{i + 1} lacks a comment: {stripped}"
                )
