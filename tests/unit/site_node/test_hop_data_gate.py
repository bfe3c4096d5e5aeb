"""A site whose data fails the data gate fails the hop before fetching or training, and
tells the coordinator the failing checks' counts, never a value."""

from __future__ import annotations

import numpy as np
import pytest

from baton.ml.data import SiteData, Split
from baton.ml.gate import GatePolicy
from site_node.fake_client import FakeCoordinatorClient
from site_node.hop import HopRunner, LocalData
from tests.unit.site_node.hop_world import SCHEMA, World, data, methods, plan


def _runner(
    world: World, client: FakeCoordinatorClient, local: SiteData, gate: GatePolicy | None = None
) -> HopRunner:
    """site-a's runner (its log opened as the world opens it) with ``local`` as its data."""
    world.runner("site-a", client)
    return HopRunner(
        client,
        tls=world.pki.material("site-a"),
        keys=world.pki.keys("site-a"),
        local=LocalData(schema=SCHEMA, data=local),
        work_dir=world.tmp / "site-a",
        replay=world.guards["site-a"],
        audit=world.logs["site-a"],
        data_gate=gate,
    )


def _leaky() -> SiteData:
    """Good training data whose validation split is a copy of part of it."""
    good = data(1)
    return SiteData(train=good.train, val=Split(x=good.train.x[:16], y=good.train.y[:16]))


def test_a_failing_gate_fails_the_hop_before_anything_is_fetched(world: World) -> None:
    client = FakeCoordinatorClient()

    assert not _runner(world, client, _leaky()).run(world.signed(plan()))

    assert methods(client) == ["fail_hop"]
    [failed] = client.calls_to("fail_hop")
    assert failed.args["reason"] == "data_error"
    assert failed.args["message"] == (
        "data gate failed: FAIL leakage: 16 of 16 validation rows also in the training "
        "split (more than the 75% allowed)"
    )
    [event] = world.events("site-a")
    assert event["event"] == "hop_rejected"
    assert event["detail"] == {"reason": "data_error"}


def test_the_site_policy_decides_what_fails(world: World) -> None:
    client = FakeCoordinatorClient()
    lenient = GatePolicy(max_leaked_fraction=1.0)

    assert _runner(world, client, _leaky(), lenient).run(world.signed(plan()))

    assert not client.calls_to("fail_hop")
    assert len(client.completed) == 1


def test_a_warning_does_not_stop_the_hop(world: World, caplog: pytest.LogCaptureFixture) -> None:
    good = data(1)
    one_class = SiteData(
        train=Split(x=good.train.x, y=np.zeros(len(good.train), np.int64)), val=good.val
    )
    client = FakeCoordinatorClient()

    with caplog.at_level("WARNING", logger="baton.ml.gate"):
        assert _runner(world, client, one_class).run(world.signed(plan()))

    assert len(client.completed) == 1
    assert "warn label_balance: 1 of 2 classes absent from training" in caplog.text
