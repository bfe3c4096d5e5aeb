"""Pipeline parallelism: stages keep the model's names, and two stages train like one process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from baton.errors import PlanError, WorkerError
from baton.ml.codec import load_into, load_state_file
from baton.ml.families import family
from site_node.parallel import checkpoint, families
from site_node.parallel.job import Job, ModelSpec, TrainSpec
from site_node.parallel.launch import launch, read_result, start_workers
from site_node.parallel.plans import ModelFootprint, ParallelPlan, PlanKind, choose_plan
from tests.unit.site_node.parallel.helpers import (
    LM,
    MLP,
    SGD_TOLERANCE,
    case,
    max_diff,
    reference,
    write_job,
)

TRAINING = TrainSpec(lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=16, steps=6, seed=3)
"""Six steps of four-batch epochs: crosses an epoch boundary (a new sampler order)."""

PP2 = ParallelPlan(kind=PlanKind.PP, pp=2)
LOGREG = ModelSpec(name="logreg", num_features=8, num_classes=3)
GIB = 2**30


@pytest.mark.parametrize(
    ("spec", "broadcast"),
    [pytest.param(LM, True, id="lm"), pytest.param(MLP, False, id="mlp-every-rank-reads")],
)
def test_pipeline_matches_single_process(tmp_path: Path, spec: ModelSpec, broadcast: bool) -> None:
    c = case(spec)
    job, path = write_job(
        tmp_path / "hop", c, plan=PP2, training=TRAINING, broadcast_from_rank0=broadcast
    )
    lines: list[dict[str, object]] = []
    out = launch(path, starter="fork", progress=lines.append)

    want_losses, want_state = reference(c, TRAINING)
    result = read_result(job)
    got = load_state_file(out)
    assert result["plan"] == "pp"
    # 16 examples, 2 stages: 8 microbatches of 2 (1F1B).
    assert result["microbatches"] == 8
    assert result["losses"] == pytest.approx(want_losses, abs=SGD_TOLERANCE, rel=0)
    assert max_diff(got, want_state) <= SGD_TOLERANCE
    # Training moved the weights far more than the tolerance: the comparison is not vacuous.
    assert max_diff(c.weights, want_state) > 1000 * SGD_TOLERANCE
    # Complete export from both stages: every key at full shape, loadable into one process.
    fresh = families.build(spec, seed=99)
    assert {k: v.shape for k, v in got.items()} == {
        k: v.shape for k, v in fresh.state_dict().items()
    }
    load_into(fresh, got)
    last_stage_key = "head.weight" if spec is LM else "body.2.weight"
    assert torch.equal(fresh.state_dict()[last_stage_key], got[last_stage_key])
    # Rank 0 (the first stage) reports the loss that the last stage computed.
    assert lines[0] == {"event": "start", "resumed_from": 0, "total": TRAINING.steps}
    assert lines[-1]["step"] == TRAINING.steps
    assert lines[-1]["loss"] == pytest.approx(want_losses[-1], abs=SGD_TOLERANCE)


def test_a_killed_pipeline_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    c = case(MLP)
    training = TrainSpec(lr=0.05, momentum=0.9, batch_size=16, steps=40, seed=5)
    job, path = write_job(tmp_path / "hop", c, plan=PP2, training=training, checkpoint_every=3)
    running = start_workers(job, path, "fork")
    try:
        deadline = time.monotonic() + 60
        while (checkpoint.latest(job.checkpoint_dir) or (0,))[0] < 6:
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        running.kill()
    found = checkpoint.latest(job.checkpoint_dir)
    assert found is not None
    killed_at = found[0]
    assert 6 <= killed_at < training.steps

    out = launch(path, starter="fork")

    assert read_result(job)["resumed_from"] == killed_at
    want_losses, want_state = reference(c, training)
    assert read_result(job)["losses"][killed_at:] == pytest.approx(
        want_losses[killed_at:], abs=SGD_TOLERANCE, rel=0
    )
    assert max_diff(load_state_file(out), want_state) <= SGD_TOLERANCE


def test_model_with_fewer_layers_than_stages_is_refused(tmp_path: Path) -> None:
    one_block = ModelSpec(
        name=LM.name, args={**LM.args, "layers": 1}, num_features=8, num_classes=16
    )
    job, path = write_job(tmp_path / "hop", case(one_block), plan=PP2, training=TRAINING)
    with pytest.raises(WorkerError, match="no pipeline plan of 2 stages"):
        launch(path, starter="fork")
    assert not job.output_path.exists()


_GEN = torch.Generator().manual_seed(0)
LM3 = ModelSpec(name=LM.name, args={**LM.args, "layers": 3}, num_features=8, num_classes=16)
MLP3 = ModelSpec(name="mlp", args={"hidden": [16, 12]}, num_features=8, num_classes=3)


@pytest.mark.parametrize(
    ("spec", "pp", "inputs"),
    [
        pytest.param(LM3, 2, torch.randint(0, 16, (5, 8), generator=_GEN), id="lm-uneven"),
        pytest.param(LM3, 3, torch.randint(0, 16, (5, 8), generator=_GEN), id="lm-3"),
        pytest.param(MLP3, 2, torch.randn(5, 8, generator=_GEN), id="mlp-uneven"),
        pytest.param(MLP3, 3, torch.randn(5, 8, generator=_GEN), id="mlp-3"),
    ],
)
def test_stages_partition_the_model_and_compose_to_it(
    spec: ModelSpec, pp: int, inputs: torch.Tensor
) -> None:
    model = families.build(spec, seed=2)
    stages = family(spec.name).pp_stages(model, pp)
    assert len(stages) == pp
    keys = [list(stage.state_dict()) for stage in stages]
    # Every key of the model exactly once, in the stage that runs it; no stage empty.
    assert sorted(k for ks in keys for k in ks) == sorted(model.state_dict())
    assert all(any(k.endswith("weight") for k in ks) for ks in keys)
    first, last = (
        ("tok_emb.weight", "head.weight") if spec is LM3 else ("body.0.weight", "body.4.weight")
    )
    assert first in keys[0]
    assert last in keys[-1]
    # The stages share the model's tensors: training a stage trains the model.
    assert stages[0].state_dict()[first].data_ptr() == model.state_dict()[first].data_ptr()
    out = inputs
    for stage in stages:
        out = stage(out)
    assert torch.equal(out, model(inputs))


def test_pipeline_degrees_follow_the_layers() -> None:
    assert family(LM3.name).pp_degrees(families.build(LM3)) == (2, 3)
    assert family("mlp").pp_degrees(families.build(MLP)) == (2,)
    assert family("logreg").pp_degrees(families.build(LOGREG)) == ()
    assert families.footprint(
        families.build(LM3), optimizer="sgd", batch=8, example_shape=(8,)
    ).pp_degrees == (2, 3)
    with pytest.raises(PlanError, match="no pipeline plan of 3 stages"):
        family("mlp").pp_stages(families.build(MLP), 3)
    with pytest.raises(PlanError, match="no pipeline plan of 2 stages"):
        family("logreg").pp_stages(families.build(LOGREG), 2)


@pytest.mark.parametrize(
    ("kind", "dp", "tp", "pp"),
    [
        (PlanKind.PP, 1, 1, 1),  # one stage is not a pipeline
        (PlanKind.PP, 2, 1, 2),
        (PlanKind.PP, 1, 2, 2),
        (PlanKind.DDP, 2, 1, 2),
        (PlanKind.FSDP_TP, 2, 2, 2),
        (PlanKind.SINGLE, 1, 1, 2),
    ],
)
def test_pipeline_plan_shape_is_checked(kind: PlanKind, dp: int, tp: int, pp: int) -> None:
    with pytest.raises(ValueError, match=f"plan {kind} cannot have dp={dp}, tp={tp}, pp={pp}"):
        ParallelPlan(kind=kind, dp=dp, tp=tp, pp=pp)
    with pytest.raises(ValueError, match="at least one worker"):
        ParallelPlan(kind=PlanKind.PP, pp=0)
    assert PP2.world_size == 2


def test_pipeline_is_chosen_only_when_asked() -> None:
    # 250M parameters with SGD: 3 GB of state, too much for two 1 GiB devices in any plan.
    big = ModelFootprint(num_params=250_000_000, activation_bytes=GIB, pp_degrees=(2, 3))
    with pytest.raises(PlanError, match="no parallel plan fits"):
        choose_plan(devices=2, free_bytes=GIB, model=big)
    assert choose_plan(devices=2, free_bytes=80 * GIB, model=big).kind == PlanKind.DDP
    assert choose_plan(devices=2, free_bytes=GIB, model=big, override=PP2) == PP2
    with pytest.raises(PlanError, match="into 4 stages; the model supports: 2, 3"):
        choose_plan(
            devices=4, free_bytes=GIB, model=big, override=ParallelPlan(kind=PlanKind.PP, pp=4)
        )
    with pytest.raises(PlanError, match="supports: none"):
        choose_plan(devices=2, free_bytes=GIB, model=ModelFootprint(num_params=10), override=PP2)
    with pytest.raises(PlanError, match="needs 3 devices; this site has 2"):
        choose_plan(
            devices=2, free_bytes=GIB, model=big, override=ParallelPlan(kind=PlanKind.PP, pp=3)
        )


def test_job_file_carries_the_pipeline_degree(tmp_path: Path) -> None:
    job = Job(model=MLP, training=TRAINING, plan=PP2, workdir=str(tmp_path))
    assert Job.from_json(job.to_json()) == job
    assert '"pp": 2' in job.to_json()
    # A job written before pipeline plans has no "pp": it means one stage.
    legacy = ParallelPlan(kind=PlanKind.DDP, dp=2)
    text = Job(model=MLP, training=TRAINING, plan=legacy, workdir=str(tmp_path)).to_json()
    text = text.replace('"pp": 1,', "").replace('"pp": 1', "")
    assert '"pp"' not in text
    assert Job.from_json(text).plan == legacy
