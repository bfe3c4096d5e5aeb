"""The site's ``[training]`` settings and the parallel plan they give a hop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from baton.errors import ConfigError, PlanError
from baton.ml.models import build_model
from baton.plan import parse_plan
from site_node.config import SiteTraining, load_site_config
from site_node.local_training import remove_stale_jobs, site_device, site_plan
from site_node.parallel.plans import ParallelPlan, PlanKind

SITE = """
coordinator = "localhost:7443"

[tls]
ca = "ca.pem"
cert = "site.pem"
key = "site.key"
"""

PLAN = """
[run]
name = "plan"
sites = ["a", "b"]

[model]
name = "{model}"
{args}

[task]
dataset = "breast_cancer"

[training]
{training}
"""


def test_defaults_train_in_process(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    assert load_site_config(path).training == SiteTraining(
        parallel_plan="single", workers=1, launcher="torchrun", checkpoint_every=100, restarts=1
    )


def test_training_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        SITE + '\n[training]\nparallel_plan = "ddp"\nworkers = 2\nlauncher = "fork"\n'
        "checkpoint_every = 5\nrestarts = 0\n"
    )
    assert load_site_config(path).training == SiteTraining(
        parallel_plan="ddp", workers=2, launcher="fork", checkpoint_every=5, restarts=0
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('parallel_plan = "pipeline"', "'parallel_plan' must be one of auto, single, ddp,"),
        ("workers = 0", "'workers' must be at least 1, not 0"),
        ('launcher = "mpirun"', "'launcher' must be one of torchrun, fork, not 'mpirun'"),
        ('parallel_plan = "fsdp"', "'parallel_plan' 'fsdp' needs 'workers' of at least 2"),
        ("threads = 2", "unknown key 'training.threads'"),
        ("checkpoint_every = -1", "'checkpoint_every' must not be negative, not -1"),
        ("restarts = -2", "'restarts' must not be negative, not -2"),
        ('device = "tpu"', "'device' must be one of auto, cpu, cuda, not 'tpu'"),
        ("nodes = 0", "'nodes' must be at least 1, not 0"),
        ("nodes = 2", "'nodes' > 1 needs 'rendezvous' (host:port) and 'shared_dir'"),
        (
            'nodes = 2\nrendezvous = "primary"\nshared_dir = "s"',
            "the rendezvous must be host:port, not 'primary'",
        ),
        (
            'nodes = 2\nrendezvous = "primary:29400"\nshared_dir = "s"\nlauncher = "fork"',
            "'nodes' > 1 needs the torchrun launcher",
        ),
        ('workers = "2"', "training.workers"),
    ],
)
def test_bad_training_section_is_refused(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE + f"\n[training]\n{section}\n")
    with pytest.raises(ConfigError) as err:
        load_site_config(path)
    assert message in err.value.message
    assert str(path) in err.value.message


def _plan(
    settings: SiteTraining,
    *,
    model: str = "mlp",
    args: str = "args = { hidden = [16, 8] }",
    training: str = "",
    examples: int = 100,
) -> ParallelPlan:
    run_plan = parse_plan(
        PLAN.format(model=model, args=args, training=training), source="plan.toml"
    )
    net = build_model(
        run_plan.model.name, run_plan.model.args, num_features=30, num_classes=2, seed=0
    )
    return site_plan(settings, net, run_plan, num_examples=examples)


def test_configured_plans_use_every_worker() -> None:
    assert _plan(SiteTraining()) == ParallelPlan(kind=PlanKind.SINGLE)
    assert _plan(SiteTraining(parallel_plan="ddp", workers=2)) == ParallelPlan(
        kind=PlanKind.DDP, dp=2
    )
    assert _plan(SiteTraining(parallel_plan="tp", workers=2)) == ParallelPlan(
        kind=PlanKind.TP, tp=2
    )
    assert _plan(SiteTraining(parallel_plan="fsdp_tp", workers=4)) == ParallelPlan(
        kind=PlanKind.FSDP_TP, dp=2, tp=2
    )
    assert _plan(SiteTraining(parallel_plan="pp", workers=2)) == ParallelPlan(
        kind=PlanKind.PP, pp=2
    )
    assert _plan(SiteTraining(parallel_plan="auto", workers=1)) == ParallelPlan(
        kind=PlanKind.SINGLE
    )
    assert _plan(SiteTraining(parallel_plan="auto", workers=2)) == ParallelPlan(
        kind=PlanKind.DDP, dp=2
    )


def test_a_site_of_several_nodes_counts_all_their_workers(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        SITE + '\n[training]\nparallel_plan = "ddp"\nworkers = 2\nnodes = 2\n'
        'rendezvous = "10.0.0.5:29400"\nshared_dir = "/mnt/baton"\nnode_address = "10.0.0.5"\n'
    )
    training = load_site_config(path).training
    group = training.node_group()
    assert group is not None
    assert (group.nodes, group.endpoint, group.shared_dir, group.local_addr) == (
        2,
        "10.0.0.5:29400",
        Path("/mnt/baton"),
        "10.0.0.5",
    )
    assert _plan(training) == ParallelPlan(kind=PlanKind.DDP, dp=4)
    relative = tmp_path / "rel.toml"
    relative.write_text(
        SITE + '\n[training]\nnodes = 2\nrendezvous = "h:1"\nshared_dir = "shared"\n'
    )
    assert load_site_config(relative).training.shared_dir == tmp_path / "shared"
    assert SiteTraining().node_group() is None


def test_the_run_plan_overrides_the_sites_plan() -> None:
    two = SiteTraining(parallel_plan="ddp", workers=2)
    # "site" (the default) leaves the choice to the site.
    assert _plan(two, training='parallel_plan = "site"') == ParallelPlan(kind=PlanKind.DDP, dp=2)
    assert _plan(two, training='parallel_plan = "single"') == ParallelPlan(kind=PlanKind.SINGLE)
    assert _plan(two, training='parallel_plan = "tp"') == ParallelPlan(kind=PlanKind.TP, tp=2)
    assert _plan(SiteTraining(workers=2), training='parallel_plan = "fsdp"') == ParallelPlan(
        kind=PlanKind.FSDP, dp=2
    )
    # "auto" on a one-worker site trains in process rather than failing.
    assert _plan(SiteTraining(), training='parallel_plan = "auto"') == ParallelPlan(
        kind=PlanKind.SINGLE
    )


def test_a_plan_a_site_cannot_run_fails_with_what_to_change() -> None:
    with pytest.raises(PlanError) as err:
        _plan(SiteTraining(), training='parallel_plan = "ddp"')
    assert err.value.message == (
        "the run plan asks for plan ddp, but this site trains with 1 worker "
        "(set [training] workers in its site config)"
    )


def test_an_unknown_plan_in_the_run_plan_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(
            PLAN.format(model="mlp", args="", training='parallel_plan = "zero3"'),
            source="plan.toml",
        )
    assert "'parallel_plan' must be one of site, single, auto, ddp, fsdp, tp, fsdp_tp" in (
        err.value.message
    )


@pytest.mark.parametrize(
    ("settings", "kwargs", "message"),
    [
        (
            SiteTraining(parallel_plan="tp", workers=2),
            {"model": "logreg", "args": ""},
            "plan tp splits layers 2 ways; the model supports: none",
        ),
        (
            SiteTraining(parallel_plan="fsdp_tp", workers=2),
            {},
            "plan fsdp_tp cannot split 2 workers",
        ),
        (
            SiteTraining(parallel_plan="pp", workers=4),
            {},
            "plan pp cuts the model into 4 stages; the model supports: 2, 3",
        ),
        (
            SiteTraining(parallel_plan="ddp", workers=2),
            {"training": "proximal_mu = 0.1"},
            "does not implement the proximal penalty",
        ),
        (
            SiteTraining(parallel_plan="ddp", workers=2),
            {"training": 'optimizer = "adam"\nweight_decay = 0.01'},
            "Adam only without weight decay",
        ),
        (
            SiteTraining(parallel_plan="ddp", workers=2),
            {"examples": 31},
            "31 training examples do not fill one global batch of 32",
        ),
    ],
)
def test_plans_that_cannot_run_are_refused(
    settings: SiteTraining, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PlanError) as err:
        _plan(settings, **kwargs)  # type: ignore[arg-type]
    assert message in err.value.message


def test_a_site_trains_on_the_cpu_where_torch_sees_no_gpu() -> None:
    assert not torch.cuda.is_available()  # the CPU machines these tests run on
    assert site_device(SiteTraining()) == "cpu"
    assert site_device(SiteTraining(device="cpu", workers=4)) == "cpu"
    with pytest.raises(PlanError) as err:
        site_device(SiteTraining(device="cuda"))
    assert err.value.message == (
        "the site config asks for device cuda, but torch sees no CUDA device"
    )


def test_gpu_workers_are_at_most_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # The device count as torch would report it on a 2-GPU machine (the GPU check script,
    # benchmarks/gpu_check.sh, runs the CUDA path itself).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert site_device(SiteTraining()) == "cuda"
    assert site_device(SiteTraining(parallel_plan="ddp", workers=2)) == "cuda"
    with pytest.raises(PlanError) as err:
        site_device(SiteTraining(parallel_plan="ddp", workers=4))
    assert err.value.message == (
        "the site config asks for 4 GPU workers per machine, but this machine has 2 GPU(s)"
    )


def test_stale_jobs_of_interrupted_hops_are_removed(tmp_path: Path) -> None:
    now = 1_000_000.0
    old = tmp_path / "run-a" / "hop-00003.job"
    fresh = tmp_path / "run-b" / "hop-00001.job"
    busy = tmp_path / "run-c" / "hop-00000.job"
    for job in (old, fresh, busy):
        (job / "checkpoints").mkdir(parents=True)
        (job / "model.safetensors").write_bytes(b"weights")
    other = tmp_path / "run-a" / "hop-00003.in.sealed"
    other.write_bytes(b"sealed")
    for path in (old, old / "checkpoints", old / "model.safetensors", other):
        os.utime(path, (now - 80 * 3600, now - 80 * 3600))
    for path in (busy, busy / "model.safetensors"):
        os.utime(path, (now - 80 * 3600, now - 80 * 3600))
    # A checkpoint written an hour ago keeps its hop's directory.
    os.utime(busy / "checkpoints", (now - 3600, now - 3600))

    assert remove_stale_jobs(tmp_path, older_than_s=72 * 3600, now=now) == [old]
    assert not old.exists()
    assert fresh.exists()
    assert busy.exists()
    assert other.exists()  # not a job directory
