"""Which failed call a site retries, gives a hop up for, or stops on; and how long it waits."""

from __future__ import annotations

import random

import grpc
import pytest

from baton.errors import Denied, Rejected, ServerFault, TransportError
from site_node.client import GrpcCoordinatorClient
from site_node.retry import Backoff, HopFaults, failure_class
from tests.unit.site_node.test_hop_client import _Stub

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (S.UNAVAILABLE, "transient"),
        (S.DEADLINE_EXCEEDED, "transient"),
        (S.RESOURCE_EXHAUSTED, "transient"),
        (S.INTERNAL, "transient"),
        (S.UNKNOWN, "transient"),
        (S.NOT_FOUND, "hop"),
        (S.FAILED_PRECONDITION, "hop"),
        (S.INVALID_ARGUMENT, "hop"),
        (S.DATA_LOSS, "hop"),
        (S.PERMISSION_DENIED, "site"),
        (S.UNAUTHENTICATED, "site"),
    ],
)
def test_every_status_has_one_class(code: grpc.StatusCode, kind: str) -> None:
    assert failure_class(code) == kind


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (S.NOT_FOUND, Rejected, "NOT_FOUND: run is cancelled"),
        (S.DATA_LOSS, Rejected, "DATA_LOSS: run is cancelled"),
        (S.INTERNAL, ServerFault, "INTERNAL: run is cancelled"),
        (S.RESOURCE_EXHAUSTED, ServerFault, "RESOURCE_EXHAUSTED: run is cancelled"),
        (S.UNAVAILABLE, TransportError, "coordinator at c:1 unreachable"),
        (S.UNAUTHENTICATED, Denied, "the coordinator refused this site (UNAUTHENTICATED)"),
    ],
)
def test_the_port_raises_the_class_of_each_failure(
    code: grpc.StatusCode, error: type[Exception], message: str
) -> None:
    client = GrpcCoordinatorClient(_Stub(fail=code), target="c:1")  # type: ignore[arg-type]
    with pytest.raises(error) as raised:
        client.heartbeat()
    assert type(raised.value) is error
    assert str(raised.value) == f"cannot heartbeat: {message}"
    if isinstance(raised.value, Rejected | ServerFault):
        assert raised.value.status == code.name


def test_back_off_grows_jittered_to_its_cap_and_starts_again_after_a_reset() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) == 6  # jittered
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.failures == 0
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_two_sites_that_fail_together_do_not_retry_in_step() -> None:
    one, two = Backoff(1.0, 30.0, rng=random.Random(1)), Backoff(1.0, 30.0, rng=random.Random(2))
    assert [one.next_delay() for _ in range(4)] != [two.next_delay() for _ in range(4)]


def test_back_off_refuses_bounds_out_of_order() -> None:
    with pytest.raises(ValueError, match=r"need 0 < initial <= maximum, not 5\.0 and 1\.0"):
        Backoff(5.0, 1.0)


def test_a_hop_is_given_up_after_its_limit_of_faults_in_a_row() -> None:
    faults = HopFaults(limit=3)
    assert [faults.give_up("r", 1) for _ in range(3)] == [False, False, True]
    assert not faults.give_up("r", 2)  # counted per hop
    faults.clear("r", 1)
    assert not faults.give_up("r", 1)
