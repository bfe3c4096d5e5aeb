"""An in-memory coordinator client for tests: records every call, serves blobs, fails on demand."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from baton.domain import Assignment, BlobRef
from baton.errors import BlobError
from site_node.client import Announcement, HopDone, Registration, UploadStatus


@dataclass(frozen=True, slots=True)
class Call:
    """One call made to the fake: the method's name and its arguments by name."""

    method: str
    args: Mapping[str, object] = field(default_factory=dict)


class FakeCoordinatorClient:
    """A :class:`site_node.client.CoordinatorClient` that keeps everything in memory.

    Every call is recorded in :attr:`calls` before it runs, so a call told to fail is
    recorded too. Blobs live in :attr:`blobs` by content hash: :meth:`put_blob` adds one a
    site can download, and an upload adds what the site sent.

    Args:
        assignments: What :meth:`watch_assignments` yields, in order.
        site_id: The site id :meth:`register` answers with.
        federation: The federation :meth:`register` answers with.
    """

    def __init__(
        self,
        assignments: Iterable[Assignment] = (),
        *,
        site_id: str = "site",
        federation: str = "testfed",
    ) -> None:
        self.assignments = list(assignments)
        self.calls: list[Call] = []
        self.blobs: dict[str, bytes] = {}
        self._site_id = site_id
        self._federation = federation
        self._failures: dict[str, list[BaseException]] = {}
        self._uploads: dict[str, UploadStatus] = {}

    def fail(self, method: str, error: BaseException, *, times: int = 1) -> None:
        """Makes the next ``times`` calls of ``method`` raise ``error``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def put_blob(self, data: bytes) -> BlobRef:
        """Stores ``data`` for download; returns its reference."""
        ref = BlobRef(blob_id=hashlib.sha256(data).hexdigest(), size=len(data))
        self.blobs[ref.blob_id] = data
        return ref

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of ``method``, in order."""
        return [c for c in self.calls if c.method == method]

    @property
    def completed(self) -> list[HopDone]:
        """What :meth:`complete_hop` was given, in order."""
        return [cast(HopDone, c.args["done"]) for c in self.calls_to("complete_hop")]

    def register(self, announcement: Announcement) -> Registration:
        """Answers with the configured site id and federation."""
        self._record("register", announcement=announcement)
        return Registration(site_id=self._site_id, federation=self._federation, lease_seconds=5.0)

    def heartbeat(self) -> None:
        """Records the heartbeat."""
        self._record("heartbeat")

    def watch_assignments(self) -> _FakeStream:
        """Yields :attr:`assignments` as they are when the iteration starts."""
        self._record("watch_assignments")
        return _FakeStream(self.assignments)

    def download(
        self,
        *,
        run_id: str,
        hop_index: int,
        blob: BlobRef,
        dest: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Writes the stored blob to ``dest`` from where a partial ``dest`` ends, as the real
        client does, and checks it against ``blob``."""
        self._record("download", run_id=run_id, hop_index=hop_index, blob=blob, dest=dest)
        data = self.blobs.get(blob.blob_id)
        if data is None:
            raise BlobError(f"no blob {blob.blob_id[:12]} at the fake coordinator")
        offset = dest.stat().st_size if dest.exists() else 0
        with dest.open("ab") as f:
            f.write(data[offset:])
        if dest.stat().st_size != blob.size or _sha256(dest) != blob.blob_id:
            dest.unlink()
            raise BlobError("downloaded model does not match its content hash")
        if progress is not None:
            progress(blob.size)

    def upload(
        self, *, run_id: str, hop_index: int, source: Path, manifest: bytes | None = None
    ) -> BlobRef:
        """Stores the bytes of ``source``; returns their reference."""
        self._record("upload", run_id=run_id, hop_index=hop_index, source=source)
        return self.put_blob(source.read_bytes())

    def upload_status(self, transfer_id: str) -> UploadStatus:
        """Nothing is stored for a transfer this fake has not seen."""
        self._record("upload_status", transfer_id=transfer_id)
        return self._uploads.get(transfer_id, UploadStatus(committed_offset=0, complete=False))

    def report_metrics(
        self, *, run_id: str, hop_index: int, stage: str, metrics: Mapping[str, float]
    ) -> None:
        """Records the report."""
        self._record(
            "report_metrics", run_id=run_id, hop_index=hop_index, stage=stage, metrics=metrics
        )

    def complete_hop(self, done: HopDone) -> None:
        """Records the completion."""
        self._record("complete_hop", done=done)

    def fail_hop(self, *, run_id: str, hop_index: int, reason: str, message: str) -> None:
        """Records the failure."""
        self._record("fail_hop", run_id=run_id, hop_index=hop_index, reason=reason, message=message)

    def _record(self, method: str, **args: object) -> None:
        self.calls.append(Call(method, dict(args)))
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)


class _FakeStream:
    def __init__(self, assignments: list[Assignment]) -> None:
        self._assignments = assignments
        self._cancelled = False

    def __iter__(self) -> Iterator[Assignment]:
        for a in list(self._assignments):
            if self._cancelled:
                return
            yield a

    def cancel(self) -> None:
        self._cancelled = True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
