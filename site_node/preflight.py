"""``site-node check``: the site's preflight checklist, before it goes live.

Config, TLS files (permissions, chain to the CA, expiry), the signing and encryption keys,
the local data against its schema (the same data gate as ``site-node check-data``), and
the coordinator: reachable, and its certificate naming the address dialled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from baton.errors import BatonError
from baton.security.preflight import Checklist, check_app_keys, check_tls_files, dial

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
    try:
        cfg = load_site_config(config)
    except BatonError as exc:
        checks.add("config", "FAIL", exc.message)
        return checks
    checks.add("config", "ok", f"{config}: coordinator {cfg.coordinator}")
    material = check_tls_files(checks, cfg.tls)
    check_app_keys(checks, cfg.keys_dir, material)
    try:
        report = data_report(cfg)
    except BatonError as exc:
        checks.add("data", "FAIL", exc.message)
    else:
        first = f" (first: {report.failures[0].line()})" if report.failures else ""
        checks.add(
            "data", "ok" if report.passed else "FAIL", f"{cfg.data_dir}: {report.verdict()}{first}"
        )
    if material is None:
        checks.add("coordinator", "FAIL", "not tried: this site's TLS files are not usable")
    else:
        found = dial(
            cfg.coordinator, cfg.tls, material, server_name=cfg.server_name, timeout=timeout
        )
        checks.add("coordinator", "ok" if found.ok else "FAIL", found.detail)
    return checks
