"""How the run a CLI follows ends decides its exit code: failed, cancelled or rejected."""

from __future__ import annotations

import pytest

from baton import exit_codes
from baton.v1 import common_pb2
from owner.cli_runs import run_exit_code


@pytest.mark.parametrize(
    ("state", "error", "code"),
    [
        (common_pb2.RUN_STATE_SUCCEEDED, "", exit_codes.OK),
        (common_pb2.RUN_STATE_CANCELLED, "cancelled by the owner", exit_codes.CLI_RUN_CANCELLED),
        (common_pb2.RUN_STATE_FAILED, "hop 2 at st-mary failed: rejected_hop", 68),
        (common_pb2.RUN_STATE_FAILED, "hop 0 at a failed: untrusted_party", 68),
        (common_pb2.RUN_STATE_FAILED, "hop 1 at a failed: data_error: 3 rows", 63),
        (common_pb2.RUN_STATE_FAILED, "hop 1 at a failed: internal_error: x", 63),
        (common_pb2.RUN_STATE_FAILED, "lease expired", exit_codes.CLI_RUN_FAILED),
    ],
)
def test_exit_code_names_how_the_run_ended(
    state: common_pb2.RunState.ValueType, error: str, code: int
) -> None:
    assert run_exit_code(state, error) == code


def test_run_outcome_codes_are_distinct_from_unreachable() -> None:
    codes = {
        exit_codes.CLI_UNREACHABLE,
        exit_codes.CLI_RUN_FAILED,
        exit_codes.CLI_RUN_CANCELLED,
        exit_codes.CLI_RUN_REJECTED,
    }
    assert len(codes) == 4
