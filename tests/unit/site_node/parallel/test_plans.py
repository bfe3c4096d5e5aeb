"""The plan choice: devices, memory and the model's size decide; an override is checked."""

from __future__ import annotations

import pytest

from baton.errors import PlanError
from site_node.parallel.plans import ModelFootprint, ParallelPlan, PlanKind, choose_plan

GIB = 2**30
# 250M parameters with SGD: (4 + 4 + 4) bytes each = 3 GB of state.
BIG = ModelFootprint(num_params=250_000_000, activation_bytes=GIB, tp_degrees=(2, 4))


def test_one_device_is_single() -> None:
    plan = choose_plan(devices=1, free_bytes=80 * GIB, model=BIG)
    assert plan == ParallelPlan(kind=PlanKind.SINGLE)
    assert plan.world_size == 1


def test_fits_one_device_replicates() -> None:
    assert choose_plan(devices=4, free_bytes=80 * GIB, model=BIG) == ParallelPlan(
        kind=PlanKind.DDP, dp=4
    )


def test_state_too_big_for_one_device_shards() -> None:
    # 3 GB of state + a quarter of 1 GiB activations does not fit 0.8 * 3 GiB; a quarter does.
    assert choose_plan(devices=4, free_bytes=3 * GIB, model=BIG) == ParallelPlan(
        kind=PlanKind.FSDP, dp=4
    )


def test_small_global_batch_needs_tensor_parallel() -> None:
    # Data parallelism cannot split a batch of 2 four ways: TP inside 2 data-parallel groups.
    model = ModelFootprint(
        num_params=250_000_000, activation_bytes=GIB, global_batch=2, tp_degrees=(2, 4)
    )
    assert choose_plan(devices=4, free_bytes=4 * GIB, model=model) == ParallelPlan(
        kind=PlanKind.FSDP_TP, dp=2, tp=2
    )
    one = ModelFootprint(
        num_params=250_000_000, activation_bytes=GIB, global_batch=1, tp_degrees=(2, 4)
    )
    assert choose_plan(devices=4, free_bytes=4 * GIB, model=one) == ParallelPlan(
        kind=PlanKind.TP, tp=4
    )
    with pytest.raises(PlanError):
        choose_plan(
            devices=4,
            free_bytes=4 * GIB,
            model=ModelFootprint(num_params=250_000_000, activation_bytes=GIB, global_batch=1),
        )


def test_gathered_unit_counts_for_fsdp() -> None:
    # The state fits a quarter of 2 GiB, but gathering a 1 GiB block on top does not.
    small = ModelFootprint(num_params=100_000_000, tp_degrees=(4,))
    big_unit = ModelFootprint(num_params=100_000_000, unit_bytes=GIB, tp_degrees=(4,))
    assert choose_plan(devices=4, free_bytes=GIB, model=small).kind == PlanKind.FSDP
    assert choose_plan(devices=4, free_bytes=GIB, model=big_unit) == ParallelPlan(
        kind=PlanKind.TP, tp=4
    )


def test_nothing_fits_names_the_need() -> None:
    with pytest.raises(PlanError, match=r"needs about \d+ MiB"):
        choose_plan(devices=2, free_bytes=GIB, model=BIG)
    with pytest.raises(PlanError, match="no parallel plan fits"):
        choose_plan(devices=1, free_bytes=GIB, model=BIG)


def test_adam_state_counts() -> None:
    sgd = ModelFootprint(num_params=10, optimizer="sgd")
    adam = ModelFootprint(num_params=10, optimizer="adamw")
    assert (sgd.state_bytes, adam.state_bytes) == (120, 160)


def test_override_is_used_when_possible() -> None:
    want = ParallelPlan(kind=PlanKind.FSDP_TP, dp=2, tp=2)
    assert choose_plan(devices=4, free_bytes=80 * GIB, model=BIG, override=want) == want


def test_override_needing_more_devices_fails() -> None:
    with pytest.raises(PlanError, match="needs 4 devices; this site has 2"):
        choose_plan(
            devices=2, free_bytes=GIB, model=BIG, override=ParallelPlan(kind=PlanKind.DDP, dp=4)
        )


def test_override_with_unsupported_tp_degree_fails() -> None:
    model = ModelFootprint(num_params=10, tp_degrees=(2,))
    with pytest.raises(PlanError, match="supports: 2"):
        choose_plan(
            devices=4, free_bytes=GIB, model=model, override=ParallelPlan(kind=PlanKind.TP, tp=4)
        )
    no_tp = ModelFootprint(num_params=10)
    with pytest.raises(PlanError, match="supports: none"):
        choose_plan(
            devices=2, free_bytes=GIB, model=no_tp, override=ParallelPlan(kind=PlanKind.TP, tp=2)
        )


@pytest.mark.parametrize(
    ("kind", "dp", "tp"),
    [(PlanKind.SINGLE, 2, 1), (PlanKind.DDP, 1, 2), (PlanKind.TP, 2, 2), (PlanKind.FSDP_TP, 1, 2)],
)
def test_plan_shape_must_match_kind(kind: PlanKind, dp: int, tp: int) -> None:
    with pytest.raises(ValueError, match="cannot have"):
        ParallelPlan(kind=kind, dp=dp, tp=tp)
