"""deploy/: example configs load, systemd units are hardened, the Dockerfile is sound."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from baton.plan import load_plan
from coordinator.config import load_coordinator_config
from site_node.config import load_site_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
PYPROJECT = EXAMPLES.parents[1] / "pyproject.toml"
SCRIPTS = set(tomllib.loads(PYPROJECT.read_text())["project"]["scripts"])


def test_example_plan_is_valid() -> None:
    plan = load_plan(EXAMPLES / "plan.toml")
    assert plan.total_hops == 12


def test_example_coordinator_and_site_configs_are_valid() -> None:
    coord = load_coordinator_config(EXAMPLES / "coordinator.toml")
    assert coord.listen == "0.0.0.0:7443"
    assert coord.tls.cert == EXAMPLES / "pki" / "coordinator.pem"
    site = load_site_config(EXAMPLES / "site.toml")
    assert site.coordinator.endswith(":7443")
    assert site.data_dir == Path("/var/lib/baton-site/data")


SYSTEMD = EXAMPLES.parent / "systemd"
DOCKERFILE = EXAMPLES.parent / "docker" / "Dockerfile"
HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "PrivateUsers": "true",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "true",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}
"""Settings every unit carries, whatever it runs."""


def unit_settings(path: Path) -> dict[str, list[str]]:
    """The ``[Service]`` settings of a systemd unit, each key with every value it is given."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("unit", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_systemd_units_are_hardened_and_write_only_their_state(unit: str) -> None:
    s = unit_settings(SYSTEMD / unit)
    assert {k: s.get(k, ["<unset>"])[-1] for k in HARDENING} == HARDENING
    assert s["User"] == ["baton"]
    assert "~@privileged" in " ".join(s["SystemCallFilter"])
    writable = s["ReadWritePaths"][-1].split()
    if "StateDirectory" in s:  # everything it writes is its own state directory
        assert writable == [f"/var/lib/{s['StateDirectory'][-1]}"]
    binary = s["ExecStart"][-1].split()[0]
    assert binary.rsplit("/", 1)[1] in SCRIPTS


def test_restart_is_refused_for_errors_a_person_must_fix() -> None:
    from baton import exit_codes

    coord = unit_settings(SYSTEMD / "baton-coordinator.service")["RestartPreventExitStatus"]
    assert coord[-1].split() == [
        str(c)
        for c in (
            exit_codes.COORDINATOR_CONFIG,
            exit_codes.COORDINATOR_PKI,
            exit_codes.COORDINATOR_STORE,
        )
    ]
    site = unit_settings(SYSTEMD / "baton-site.service")["RestartPreventExitStatus"]
    assert site[-1].split() == [
        str(c)
        for c in (
            exit_codes.SITE_CONFIG,
            exit_codes.SITE_PKI,
            exit_codes.SITE_DATA,
            exit_codes.SITE_DATA_GATE,
        )
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_systemd_analyze_rates_each_unit_ok(unit: str) -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(SYSTEMD / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match[1]) < 2.0, out.stdout
    assert match[2] == "OK"


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage of the Dockerfile (by its name) as (instruction, arguments) pairs."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            current = stages.setdefault(rest.split(" AS ")[-1].strip(), [])
        current.append((word.upper(), rest.strip()))
    return stages


def test_dockerfile_builds_two_non_root_images_of_the_installed_commands() -> None:
    stages = dockerfile_stages()
    assert {"build", "base", "coordinator", "site"} <= set(stages)
    base = dict(stages["base"])
    assert base["USER"] == "10001:10001"
    for name, script in (("coordinator", "coordinator"), ("site", "site-node")):
        stage = dict(stages[name])
        assert stage["FROM"] == f"base AS {name}"
        assert "USER" not in stage  # the base's unprivileged user
        entry = json.loads(stage["ENTRYPOINT"])
        assert entry[0] == script
        assert script in SCRIPTS
        assert entry[-1].startswith("/etc/baton/")
    # Read-only root: no bytecode written at run time, caches under /tmp.
    assert "PYTHONDONTWRITEBYTECODE=1" in base["ENV"]
    assert "HOME=/tmp" in base["ENV"]
    build = stages["build"]
    copied = {args.split()[0] for word, args in build if word == "COPY"}
    packages = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied
    run = next(args for word, args in build if word == "RUN")
    assert "--constraint constraints.txt" in run
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
