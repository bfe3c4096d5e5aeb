"""The layout's promises: what each process may load, how big a module may grow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("baton", "coordinator", "site_node", "owner", "sim", "ordering")
MAX_LINES = 400
HEAVY = ("torch", "sklearn", "flwr")


def loaded_after(code: str) -> tuple[set[str], str]:
    """Runs ``code`` in a fresh interpreter; returns the top-level packages it loaded and
    what it printed before them."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        import json as _json, sys as _sys
        print("\\n" + _json.dumps(sorted({m.split(".")[0] for m in _sys.modules})))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    printed, _, last = proc.stdout.rstrip("\n").rpartition("\n")
    return set(json.loads(last)), printed


def test_coordinator_server_loads_no_ml_library() -> None:
    loaded, _ = loaded_after("import coordinator.server")
    assert "coordinator" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    ("module", "commands"),
    [
        (
            "owner.cli",
            [
                "pki",
                "submit",
                "runs",
                "fetch",
                "predict",
                "verify-log",
                "task",
                "new",
                "demo",
                "lab",
                "simulate",
            ],
        ),
        ("coordinator.cli", ["serve"]),
        ("site_node.cli", ["run", "worker-node", "check-data"]),
    ],
)
def test_help_loads_neither_torch_nor_grpc(module: str, commands: list[str]) -> None:
    loaded, printed = loaded_after(
        f"""
        import sys
        import {module} as cli
        sys.argv = ["prog", "--help"]
        try:
            cli.main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        """
    )
    assert module.split(".")[0] in loaded
    assert loaded.isdisjoint({"torch", "grpc"}), sorted(loaded & {"torch", "grpc"})
    listed = {line.strip("│ ").split(" ")[0] for line in printed.splitlines()}
    assert set(commands) <= listed, printed


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not path.is_relative_to(ROOT / "baton" / "v1")  # generated stubs
    }
    assert len(sizes) > 50  # the walk found the project
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_big, f"split these modules (over {MAX_LINES} lines): {too_big}"


def test_the_kernel_torch_contract_names_every_kernel_module_but_ml() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c.get("forbidden_modules") == ["torch"]]
    kernel = {
        f"baton.{path.stem if path.suffix == '.py' else path.name}"
        for path in (ROOT / "baton").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert set(contract["source_modules"]) == kernel - {"baton.ml"}


def test_the_kernel_does_not_even_name_a_role() -> None:
    # Stricter than the import contracts: no docstring or string in the kernel leans on
    # the site's code either; the generated stubs are left out.
    mentions = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "baton").rglob("*.py"))
        if "v1" not in path.parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "site_node" in line
    ]
    assert mentions == []
