"""A client of the coordinator's admin service, for the study owner's and operator's tools."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from baton.errors import (
    BatonError,
    BlobError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PkiError,
    TransportError,
)
from baton.io import AtomicFile
from baton.security.pin import coordinator_problem
from baton.security.preflight import unreachable
from baton.security.sealing import AppKeys, sign_plan
from baton.security.tls import TlsMaterial, channel_credentials
from baton.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from baton.wire.channel import file_chunks, secure_channel, sha256_file

UNARY_TIMEOUT_SECONDS = 30.0


class AdminClient:
    """Admin calls over mTLS; every failure becomes a BatonError with a clear message.

    Args:
        target: Coordinator address, ``host:port``.
        tls: The admin's TLS material.
        server_name: Name expected in the coordinator's certificate, if not the host dialled.
    """

    def __init__(self, target: str, tls: TlsMaterial, *, server_name: str | None = None) -> None:
        self.target = target
        self._tls, self._server_name = tls, server_name or ""
        self._pinned = False
        self._channel = secure_channel(target, channel_credentials(tls), server_name=server_name)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_run(self, plan_toml: str, owner: AppKeys) -> admin_pb2.Run:
        """Submits a plan signed with the study owner's key; the last hop is sealed to them."""
        request = admin_pb2.CreateRunRequest(
            plan_toml=plan_toml,
            plan_signature=sign_plan(plan_toml, owner.signing_key),
            owner_signing_certificate_pem=owner.signing_cert_pem.decode("ascii"),
            owner_encryption_certificate_pem=owner.encryption_cert_pem.decode("ascii"),
        )
        with self._rpc("create the run"):
            resp = self._stub.CreateRun(request, timeout=UNARY_TIMEOUT_SECONDS)
        return resp.run

    def create_run_from_model(
        self, plan_toml: str, owner: AppKeys, *, run_id: str, manifest: bytes, sealed: Path
    ) -> admin_pb2.Run:
        """Submits a signed plan that pins a start model, with that model ``sealed`` (by
        :func:`owner.start_model.submit_from_model`) for the run ``run_id``."""
        size = sealed.stat().st_size
        header = admin_pb2.StartModelHeader(
            run=admin_pb2.CreateRunRequest(
                plan_toml=plan_toml,
                plan_signature=sign_plan(plan_toml, owner.signing_key),
                owner_signing_certificate_pem=owner.signing_cert_pem.decode("ascii"),
                owner_encryption_certificate_pem=owner.encryption_cert_pem.decode("ascii"),
            ),
            run_id=run_id,
            manifest=manifest,
            total_size=size,
            sha256=sha256_file(sealed),
        )

        def requests() -> Iterator[admin_pb2.CreateRunFromModelRequest]:
            yield admin_pb2.CreateRunFromModelRequest(header=header)
            offset = 0
            for block in file_chunks(sealed):
                chunk = common_pb2.BlobChunk(offset=offset, data=block)
                yield admin_pb2.CreateRunFromModelRequest(chunk=chunk)
                offset += len(block)

        with self._rpc("create the run with its start model"):
            return self._stub.CreateRunFromModel(requests()).run

    def get_run(self, run_id: str) -> admin_pb2.Run:
        with self._rpc(f"get run {run_id}"):
            return self._stub.GetRun(
                admin_pb2.GetRunRequest(run_id=run_id), timeout=UNARY_TIMEOUT_SECONDS
            )

    def list_runs(self) -> list[admin_pb2.Run]:
        with self._rpc("list runs"):
            return list(
                self._stub.ListRuns(admin_pb2.ListRunsRequest(), timeout=UNARY_TIMEOUT_SECONDS).runs
            )

    def list_sites(self) -> list[admin_pb2.Site]:
        with self._rpc("list sites"):
            return list(
                self._stub.ListSites(
                    admin_pb2.ListSitesRequest(), timeout=UNARY_TIMEOUT_SECONDS
                ).sites
            )

    def cancel_run(self, run_id: str, reason: str = "") -> admin_pb2.Run:
        with self._rpc(f"cancel run {run_id}"):
            return self._stub.CancelRun(
                admin_pb2.CancelRunRequest(run_id=run_id, reason=reason),
                timeout=UNARY_TIMEOUT_SECONDS,
            )

    def watch(self, run_id: str, *, after_seq: int = 0) -> Iterator[admin_pb2.RunEvent]:
        """Yields a run's events until the run ends."""
        with self._rpc(f"watch run {run_id}"):
            yield from self._stub.WatchRun(
                admin_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
            )

    def fetch_sealed_result(self, run_id: str, dest: Path) -> int:
        """Streams a succeeded run's sealed final model to ``dest``; returns its size.

        See :func:`owner.fetch.fetch_result` for the opened model."""
        request = admin_pb2.FetchResultRequest(run_id=run_id)
        with self._rpc(f"fetch the result of run {run_id}"):
            return _save(self._stub.FetchResult(request), dest, "result")

    def fetch_sealed_hop(self, run_id: str, hop_index: int, dest: Path) -> int:
        """Streams the stored output of hop ``hop_index`` (from 0) of a run the caller owns
        to ``dest``; returns its size. See :func:`owner.fetch_hop.fetch_hop`."""
        request = admin_pb2.FetchHopOutputRequest(run_id=run_id, hop_index=hop_index)
        with self._rpc(f"fetch hop {hop_index + 1} of run {run_id}"):
            return _save(self._stub.FetchHopOutput(request), dest, "hop output")

    @contextmanager
    def _rpc(self, what: str) -> Iterator[None]:
        if not self._pinned:  # once per client: see baton.security.pin
            impostor = coordinator_problem(self.target, self._tls, server_name=self._server_name)
            if impostor:
                raise PkiError(f"cannot {what}: the server at {self.target} is {impostor}")
            self._pinned = True
        try:
            yield
        except grpc.RpcError as exc:
            raise _translate(exc, what, self.target) from None


def _save(chunks: Iterator[common_pb2.BlobChunk], dest: Path, what: str) -> int:
    """Writes a blob's chunks, in order, to ``dest`` (atomically); returns its size."""
    offset = 0
    with AtomicFile(dest, mode=0o644) as f:
        for chunk in chunks:
            if chunk.offset != offset:
                raise BlobError(f"{what} stream out of order at byte {offset}")
            f.write(chunk.data)
            offset += len(chunk.data)
        f.commit()
    return offset


def _translate(exc: grpc.RpcError, what: str, target: str) -> BatonError:
    code, details = exc.code(), exc.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        return TransportError(
            f"cannot {what}: coordinator at {target} unreachable "
            f"({unreachable(details) or 'not running, wrong address, or TLS refused'})"
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransportError(f"cannot {what}: coordinator at {target} did not answer in time")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PkiError(f"cannot {what}: the coordinator refused this certificate ({details})")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return ConfigError(f"cannot {what}: {details}")
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"cannot {what}: {details}")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return ConflictError(f"cannot {what}: {details}")
    return TransportError(f"cannot {what}: {code.name}: {details}")
