"""Drive a whole local federation through one sealed run, as the study owner would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from baton.ml.codec import load_state_file, state_of
from baton.ml.data import read_site_data
from baton.ml.models import plan_model
from baton.ml.trainer import hop_seed, train_local
from baton.plan import parse_plan
from baton.security.sealing import AppKeys
from baton.v1 import admin_pb2, common_pb2
from owner.client import AdminClient
from owner.fetch import fetch_result
from sim.localfed import LocalFederationLayout, start, wait_until_online
from sim.procs import ProcessGroup


@dataclass
class RunOutcome:
    """What a finished run left: the run, its events, the opened model, exit codes."""

    run: admin_pb2.Run
    events: list[admin_pb2.RunEvent]
    state: dict[str, torch.Tensor]
    exit_codes: list[int | None]


def run_to_the_end(
    layout: LocalFederationLayout,
    sites: Sequence[str],
    plan_toml: str,
    *,
    site_config_extra: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Starts every process, runs the plan, opens the result, stops every process."""
    with ProcessGroup() as group:
        port = start(layout, sites, group, site_config_extra=site_config_extra)
        tls = layout.admin_tls.load()
        with AdminClient(f"127.0.0.1:{port}", tls) as client:
            wait_until_online(client, sites, group)
            owner = AppKeys.load(layout.owner_keys)
            run = client.create_run(plan_toml, owner)
            events = list(client.watch(run.run_id))
            final = client.get_run(run.run_id)
            assert final.state == common_pb2.RUN_STATE_SUCCEEDED, final.error
            result = layout.owner_dir / "result.safetensors"
            fetch_result(client, run.run_id, result, owner=owner, ca_pem=tls.ca_pem)
        codes = [p.stop() for p in group.procs]
    return RunOutcome(run=final, events=events, state=load_state_file(result), exit_codes=codes)


def trained_in_process(
    layout: LocalFederationLayout, plan_toml: str, order: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The final model of an undisturbed run of ``plan_toml`` whose hops went to the sites
    ``order`` names, one hop each, every hop trained in this process as the site daemons
    train it (one torch thread, each hop on its site's training split)."""
    plan = parse_plan(plan_toml)
    data = {s: read_site_data(layout.site_dir(s) / "data") for s in set(order)}
    model = plan_model(plan, data[order[0]][0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the daemons (torch_threads = 1)
    try:
        for hop, site in enumerate(order):
            train_local(
                model,
                data[site][1].train,
                plan.training,
                seed=hop_seed(plan.run.seed, hop),
                hop_index=hop,
                num_sites=len(plan.run.sites),
            )
    finally:
        torch.set_num_threads(threads)
    return state_of(model)
