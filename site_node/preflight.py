"""``site-node check``: the site's preflight checklist, before it goes live.

Config, TLS files (permissions, chain to the CA, expiry), the signing and encryption keys,
the local data against its schema (the same data gate as ``site-node check-data``), and
the coordinator: reachable, and its certificate naming the address dialled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from baton.errors import BatonError
from baton.security.preflight import Checklist, check_coordinator, check_party

if TYPE_CHECKING:
    from baton.ml.gate import GateReport
    from site_node.config import SiteConfig


def data_report(cfg: SiteConfig) -> GateReport:
    """Reads the site's data through its task and runs the data gate on it.

    Raises:
        DataError: The data cannot be read.
        ConfigError: The schema names no installed task.
    """
    from baton.ml.gate import check_site_data
    from baton.ml.task import site_task

    schema, data = site_task(cfg.data_dir).read_site_data(cfg.data_dir)
    return check_site_data(schema, data, cfg.data)


def preflight(config: Path, *, timeout: float = 5.0) -> Checklist:
    """Runs every check of the site whose config is at ``config``; never raises a BatonError.

    Args:
        config: The site's ``site.toml``.
        timeout: Seconds to wait for the coordinator.
    """
    from site_node.config import load_site_config

    checks = Checklist()
    loaded = check_party(checks, config, load_site_config)
    if loaded is None:
        return checks
    cfg, material = loaded
    try:
        report = data_report(cfg)
    except BatonError as exc:
        checks.add("data", "FAIL", exc.message)
    else:
        first = f" (first: {report.failures[0].line()})" if report.failures else ""
        checks.add(
            "data", "ok" if report.passed else "FAIL", f"{cfg.data_dir}: {report.verdict()}{first}"
        )
    check_coordinator(checks, cfg, material, timeout=timeout)
    return checks
