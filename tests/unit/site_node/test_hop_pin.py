"""A site runs only the task code the signed plan pins: a site whose installed task differs
refuses the hop before it downloads anything, and says which code it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.ml.tasks import task_pin
from site_node.fake_client import FakeCoordinatorClient
from tests.unit.baton.task_dist import TASK, ToyDist, install
from tests.unit.site_node.hop_world import RUN, World, hop1, leftovers, methods, plan


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyDist:
    """The site's task ``toy``, installed from a throwaway distribution."""
    return install(tmp_path / "dist", monkeypatch)


def pinned(sha256: str | None = None) -> str:
    """The hop world's plan, its task pinned to the installed ``toy`` (or to ``sha256``)."""
    section = task_pin(TASK).toml()
    if sha256 is not None:
        section = section.replace(task_pin(TASK).sha256, sha256)
    text = plan()
    assert '[task]\ndataset = "toy"\n' in text
    return text.replace('[task]\ndataset = "toy"\n', section)


def test_a_site_with_the_pinned_task_trains_the_hop(world: World, toy: ToyDist) -> None:
    _, a1, client = hop1(world, text=pinned())

    assert world.runner("site-b", client).run(a1)

    assert len(client.calls_to("download")) == 1
    assert [done.hop_index for done in client.completed] == [1]


def test_a_site_whose_task_differs_refuses_before_downloading(world: World, toy: ToyDist) -> None:
    text = pinned()
    signed_pin = task_pin(TASK)
    _, a1, client = hop1(world, text=text)  # site-a has the pinned code
    (toy.package / "task.py").write_text("def load(path):\n    return 'patched'\n")
    mine = task_pin(TASK)

    assert not world.runner("site-b", client).run(a1)

    assert methods(client) == ["fail_hop"]  # nothing downloaded, nothing trained
    [failed] = client.calls_to("fail_hop")
    assert failed.args == {
        "run_id": RUN,
        "hop_index": 1,
        "reason": "invalid_plan",
        "message": (
            f"run {RUN} pins task 'toy' at {signed_pin.sha256} (toytask 1.0); "
            f"this site has {mine.sha256} (toytask 1.0): install the pinned version"
        ),
    }
    assert mine.sha256 != signed_pin.sha256
    assert world.events("site-b")[-1]["event"] == "hop_rejected"
    assert world.events("site-b")[-1]["detail"]["reason"] == "invalid_plan"
    assert leftovers(world, "site-b", "*.sealed") == []


def test_a_plan_pinned_to_other_code_is_refused_at_hop_0(world: World, toy: ToyDist) -> None:
    client = FakeCoordinatorClient()

    assert not world.runner("site-a", client).run(world.signed(pinned("sha256:" + "0" * 64)))

    assert methods(client) == ["fail_hop"]
    [failed] = client.calls_to("fail_hop")
    assert failed.args["reason"] == "invalid_plan"
    assert f"this site has {task_pin(TASK).sha256}" in str(failed.args["message"])
    assert not client.blobs
