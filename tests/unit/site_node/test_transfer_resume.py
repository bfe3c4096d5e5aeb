"""A transfer that loses the coordinator keeps asking, with back-off, and resumes where the
moved bytes end, under the same transfer id; it gives up only past its window."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from baton.domain import BlobRef
from baton.v1 import common_pb2, site_pb2, site_pb2_grpc
from site_node import transfer
from site_node.retry import Backoff, Patience

DATA = os.urandom(5 * 1000 + 3)
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 1000


class _Down(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "connection reset"


def _down(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> _Down:
    return _Down(code)  # type: ignore[abstract]


class _Clock:
    """Fake time: sleeping advances it; the pauses are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def _patience(clock: _Clock, window: float = 60.0) -> Patience:
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    return Patience(window, backoff=backoff, clock=lambda: clock.now, sleep=clock.sleep)


class _Coordinator:
    """Stores uploads per transfer id; the link breaks after ``cut_after`` bytes of the
    first stream and stays down for ``down_calls`` further calls of any kind."""

    def __init__(self, *, cut_after: int, down_calls: int) -> None:
        self.cut_after = cut_after
        self.outage = down_calls
        self.down_calls = 0
        self.stored: dict[str, bytearray] = {}
        self.headers: list[site_pb2.UploadHeader] = []
        self.status_calls = 0

    def _reach(self) -> None:
        if self.down_calls > 0:
            self.down_calls -= 1
            raise _down()

    def UploadBlob(
        self, requests: Iterator[site_pb2.UploadBlobRequest], timeout: float
    ) -> site_pb2.UploadBlobResponse:
        self._reach()
        header = next(requests).header
        self.headers.append(header)
        got = self.stored.setdefault(header.transfer_id, bytearray())
        assert header.offset == len(got), "resumed at another offset than the committed one"
        for req in requests:
            assert req.chunk.offset == len(got)
            got.extend(req.chunk.data)
            if self.cut_after and len(got) >= self.cut_after:
                self.cut_after = 0
                self.down_calls = self.outage
                raise _down()
        blob = common_pb2.BlobRef(blob_id=hashlib.sha256(got).hexdigest(), size=len(got))
        return site_pb2.UploadBlobResponse(blob=blob)

    def GetUploadStatus(
        self, request: site_pb2.GetUploadStatusRequest, timeout: float
    ) -> site_pb2.GetUploadStatusResponse:
        self.status_calls += 1
        self._reach()
        got = self.stored.get(request.transfer_id, b"")
        if got == DATA:
            blob = common_pb2.BlobRef(blob_id=SHA, size=len(DATA))
            return site_pb2.GetUploadStatusResponse(
                committed_offset=len(got), complete=True, blob=blob
            )
        return site_pb2.GetUploadStatusResponse(committed_offset=len(got))

    def DownloadBlob(
        self, request: site_pb2.DownloadBlobRequest, timeout: float
    ) -> Iterator[common_pb2.BlobChunk]:
        self._reach()
        for start in range(request.offset, len(DATA), CHUNK):
            if self.cut_after and start >= self.cut_after:
                self.cut_after = 0
                raise _down()
            yield common_pb2.BlobChunk(offset=start, data=DATA[start : start + CHUNK])


def _stub(coordinator: _Coordinator) -> site_pb2_grpc.SiteServiceStub:
    return cast(site_pb2_grpc.SiteServiceStub, cast(Any, coordinator))


def test_an_upload_cut_mid_stream_resumes_at_the_committed_byte_under_one_transfer_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_BYTES", CHUNK)
    source = tmp_path / "out.sealed"
    source.write_bytes(DATA)
    coordinator = _Coordinator(cut_after=2000, down_calls=3)
    clock = _Clock()
    with caplog.at_level(logging.WARNING, logger="site_node.transfer"):
        ref = transfer.upload(
            _stub(coordinator), run_id="r", hop_index=1, source=source, patience=_patience(clock)
        )
    assert ref == BlobRef(blob_id=SHA, size=len(DATA))
    assert [h.offset for h in coordinator.headers] == [0, 2000]
    assert len({h.transfer_id for h in coordinator.headers}) == 1
    assert list(coordinator.stored.values()) == [bytearray(DATA)]
    # Asked once before the first byte; then unreachable for three status questions,
    # answered by the fourth.
    assert coordinator.status_calls == 5
    assert len(clock.pauses) == 4
    assert all(0.25 <= p <= 4.0 for p in clock.pauses)
    transfer_id = coordinator.headers[0].transfer_id
    assert caplog.messages == [
        f"upload interrupted (UNAVAILABLE, transfer {transfer_id}); resuming at byte 2000 of 5003"
    ]


def test_an_upload_gives_up_when_the_coordinator_stays_away_past_the_window(
    tmp_path: Path,
) -> None:
    source = tmp_path / "out.sealed"
    source.write_bytes(DATA)
    coordinator = _Coordinator(cut_after=2000, down_calls=10_000)
    clock = _Clock()
    with pytest.raises(grpc.RpcError) as raised:
        transfer.upload(
            _stub(coordinator),
            run_id="r",
            hop_index=1,
            source=source,
            patience=_patience(clock, window=20.0),
        )
    assert cast(grpc.Call, raised.value).code() is grpc.StatusCode.UNAVAILABLE
    assert clock.now <= 20.0
    assert clock.now > 20.0 - 4.0  # it waited out the window, not a fixed count of tries


def test_an_upload_given_up_resumes_where_it_stopped_when_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site restarted mid-upload sends its kept output again: the same transfer resumes
    at the coordinator's committed byte, and an upload stored before is not sent again, so
    the coordinator keeps no partial upload of a dead process."""
    monkeypatch.setattr(transfer, "CHUNK_BYTES", CHUNK)
    source = tmp_path / "out.sealed"
    source.write_bytes(DATA)
    coordinator = _Coordinator(cut_after=2000, down_calls=10_000)
    with pytest.raises(grpc.RpcError):
        transfer.upload(
            _stub(coordinator),
            run_id="r",
            hop_index=1,
            source=source,
            patience=_patience(_Clock(), window=5.0),
        )
    coordinator.down_calls = 0  # the coordinator is back; the site sends the file again
    again = {"run_id": "r", "hop_index": 1, "source": source, "patience": _patience(_Clock())}
    with caplog.at_level(logging.INFO, logger="site_node.transfer"):
        ref = transfer.upload(_stub(coordinator), **again)  # type: ignore[arg-type]
        assert transfer.upload(_stub(coordinator), **again) == ref  # type: ignore[arg-type]
    assert ref == BlobRef(blob_id=SHA, size=len(DATA))
    assert [h.offset for h in coordinator.headers] == [0, 2000]
    assert list(coordinator.stored.values()) == [bytearray(DATA)]
    transfer_id = transfer.upload_transfer_id("r", 1, SHA)
    assert coordinator.headers[0].transfer_id == transfer_id
    assert caplog.messages == [
        f"upload {transfer_id} (hop 2) resumes at byte 2000 of 5003, acknowledged before",
        f"upload {transfer_id} (hop 2) was stored before",
    ]


def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    source = tmp_path / "out.sealed"
    source.write_bytes(DATA)

    class _Refusing(_Coordinator):
        def UploadBlob(self, requests: Any, timeout: float) -> site_pb2.UploadBlobResponse:
            raise _down(grpc.StatusCode.FAILED_PRECONDITION)

    coordinator = _Refusing(cut_after=0, down_calls=0)
    clock = _Clock()
    with pytest.raises(grpc.RpcError):
        transfer.upload(
            _stub(coordinator), run_id="r", hop_index=1, source=source, patience=_patience(clock)
        )
    assert clock.pauses == []
    assert coordinator.status_calls == 1  # before the first byte


def test_a_download_cut_mid_stream_resumes_at_the_end_of_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "in.sealed"
    coordinator = _Coordinator(cut_after=3000, down_calls=0)
    clock = _Clock()
    calls = 0
    real = coordinator.DownloadBlob

    def flaky(request: site_pb2.DownloadBlobRequest, timeout: float) -> Any:
        nonlocal calls
        calls += 1
        if calls in (2, 3):  # the link is still down for two more tries
            raise _down()
        return real(request, timeout)

    coordinator.DownloadBlob = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="site_node.transfer"):
        transfer.download(
            _stub(coordinator),
            run_id="r",
            hop_index=1,
            blob=BlobRef(blob_id=SHA, size=len(DATA)),
            dest=dest,
            patience=_patience(clock),
        )
    assert dest.read_bytes() == DATA
    assert calls == 4
    assert len(clock.pauses) == 3
    line = "download interrupted (UNAVAILABLE); resuming at byte 3000 of 5003"
    assert caplog.messages == 3 * [line]


def test_patience_starts_again_after_progress() -> None:
    clock = _Clock()
    patience = _patience(clock, window=5.0)
    while patience.pause():
        pass
    spent = clock.now
    assert 1.0 < spent <= 5.0
    patience.progressed()
    assert patience.pause()
    assert clock.now - spent <= 0.5
