"""The copy of a hop's output that a site seals to itself is sealed while the output
uploads: the upload starts as soon as the output is sealed to its recipient, the copy is
recorded before the hop completes, and an entry that never got its copy is handed on as it
is, or trained again when it must be re-sealed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from baton.domain import BlobRef
from baton.errors import TransportError
from site_node.fake_client import FakeCoordinatorClient
from site_node.outbox import Outbox
from tests.unit.site_node.hop_world import (
    RUN,
    World,
    hop0,
    leftovers,
    methods,
    plan,
)


class _Watching(FakeCoordinatorClient):
    """Records the outbox entry as it stands when the upload starts."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox
        self.own_at_upload: bytes | None = None

    def upload(
        self, *, run_id: str, hop_index: int, source: Path, manifest: bytes | None = None
    ) -> BlobRef:
        kept = self.outbox.get(run_id, hop_index)
        assert kept is not None  # recorded before a byte leaves: a restart resumes it
        assert kept.manifest == manifest
        self.own_at_upload = kept.own_manifest
        return super().upload(run_id=run_id, hop_index=hop_index, source=source, manifest=manifest)


def _drop_own_copy(world: World) -> None:
    """The entry as a site stopped mid-upload leaves it: sealed to the recipient only,
    not completed."""
    outbox = Outbox(world.tmp / "site-a")
    kept = outbox.get(RUN, 0)
    assert kept is not None
    assert kept.own_manifest
    assert kept.completed
    kept.own_sealed.unlink()
    outbox.put(replace(kept, own_manifest=b"", completed=False))


def test_the_upload_starts_before_the_own_copy_is_recorded_and_the_hop_completes_after(
    world: World,
) -> None:
    a0 = world.signed(plan())
    client = _Watching(Outbox(world.tmp / "site-a"))

    assert world.runner("site-a", client).run(a0)

    assert client.own_at_upload == b""  # not waited for
    assert methods(client)[-2:] == ["upload", "complete_hop"]
    kept = Outbox(world.tmp / "site-a").get(RUN, 0)
    assert kept is not None
    assert kept.own_manifest
    assert kept.own_sealed.is_file()
    assert not leftovers(world, "site-a", "*.safetensors")  # the plaintext is gone


def test_a_failed_upload_still_records_the_own_copy_and_leaves_no_plaintext(
    world: World,
) -> None:
    a0 = world.signed(plan())
    client = FakeCoordinatorClient()
    client.fail("upload", TransportError("coordinator unreachable"))
    runner = world.runner("site-a", client)

    with pytest.raises(TransportError):
        runner.run(a0)

    kept = Outbox(world.tmp / "site-a").get(RUN, 0)
    assert kept is not None
    assert kept.own_manifest
    assert kept.own_sealed.is_file()
    assert not leftovers(world, "site-a", "*.safetensors")
    rerouted = replace(a0, next_hop=world.site("site-c", 1))
    again = FakeCoordinatorClient()
    assert world.runner("site-a", again).run(rerouted)
    assert methods(again) == ["upload", "complete_hop"]  # re-sealed from it, not retrained


def test_an_entry_without_its_own_copy_is_handed_on_as_sealed(world: World) -> None:
    a0, first = hop0(world)
    _drop_own_copy(world)
    client = FakeCoordinatorClient()

    assert world.runner("site-a", client).run(a0)  # delivered again, same recipient

    assert methods(client) == ["upload", "complete_hop"]  # not trained again
    [done] = client.completed
    assert done.output_manifest == first.completed[0].output_manifest


def test_an_entry_without_its_own_copy_is_trained_again_to_reroute_it(world: World) -> None:
    a0, first = hop0(world)
    to_b = world.opened(first, a0, first.completed[0], me="site-b", sender="site-a")
    _drop_own_copy(world)
    rerouted = replace(a0, next_hop=world.site("site-c", 1))
    client = FakeCoordinatorClient()

    assert world.runner("site-a", client).run(rerouted)

    assert "report_metrics" in methods(client)  # evaluated and trained again
    [done] = client.completed
    to_c = world.opened(client, rerouted, done, me="site-c", sender="site-a")
    assert to_c.keys() == to_b.keys()
    assert all(torch.equal(to_c[k], to_b[k]) for k in to_b)  # same seed, same model
    kept = Outbox(world.tmp / "site-a").get(RUN, 0)
    assert kept is not None
    assert kept.own_manifest
