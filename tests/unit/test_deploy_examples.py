"""The example configuration files under deploy/ load with the real loaders."""

from __future__ import annotations

from pathlib import Path

from baton.plan import load_plan
from coordinator.config import load_coordinator_config
from site_node.config import load_site_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


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
