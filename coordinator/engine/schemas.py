"""Admission of a plan's sites by the data they published: one task, one schema, no gaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from baton.domain import DataProfile, group_by_value
from baton.errors import ConfigError
from baton.plan import RunPlan

SHORT_HASH = 12
"""Hex digits of a schema hash shown in a refusal (enough to tell schemas apart)."""


def check_site_data(plan: RunPlan, profiles: Mapping[str, DataProfile]) -> None:
    """Refuses a plan whose sites could not train one model on aligned inputs.

    Constraints: every site the plan names MUST have published a schema, of the plan's
    ``task.dataset``, and every one of them MUST hold the same schema hash (the hash covers
    the feature columns in order and the classes, so permuted columns disagree).

    Args:
        plan: The parsed run plan.
        profiles: The data profile each registered site published, by site id; every site
            the plan names is in it.

    Raises:
        ConfigError: a site published no schema, holds another task, or the sites disagree
            on the schema. The message names the sites.
    """
    sites = plan.run.sites
    empty = [s for s in sites if not profiles[s].schema_hash]
    if empty:
        raise ConfigError(
            f"{_sites(empty)} published no data schema (no data yet); "
            "start them with their data directory before creating the run"
        )
    dataset = plan.task.dataset
    other_task = group_by_value({s: profiles[s].task for s in sites if profiles[s].task != dataset})
    if other_task:
        held = "; ".join(f"{_sites(g)} {_hold(g)} task {task!r}" for task, g in other_task)
        raise ConfigError(f"run plan trains task {dataset!r}, but {held}")
    schemas = group_by_value({s: profiles[s].schema_hash for s in sites})
    if len(schemas) > 1:
        held = "; ".join(
            f"{', '.join(group)} {_hold(group)} schema {digest[:SHORT_HASH]}"
            for digest, group in schemas
        )
        raise ConfigError(
            f"sites disagree on the data schema: {held}; "
            "check that every site's feature columns and classes match"
        )


def _sites(group: Sequence[str]) -> str:
    return f"site {group[0]}" if len(group) == 1 else f"sites {', '.join(group)}"


def _hold(group: Sequence[str]) -> str:
    return "holds" if len(group) == 1 else "hold"
