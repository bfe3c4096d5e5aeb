"""Idle timeouts on upload streams: a client that stops sending loses its call, and with
it the upload slot and the worker thread it held."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from baton.errors import TransportError

logger = logging.getLogger(__name__)

_TRequest = TypeVar("_TRequest")
_TResponse = TypeVar("_TResponse")


@dataclass(slots=True)
class _Waiting:
    context: grpc.ServicerContext
    since: float | None = None
    """When the handler began waiting for the next message (None: not waiting)."""
    timed_out: bool = False


class IdleUploads(grpc.ServerInterceptor):
    """Ends a client-streaming call (an upload) whose client sent nothing for ``seconds``
    while the server waited for it, header included. One thread checks every open
    upload a few times per ``seconds``; a call it ends sees a TransportError saying why.

    Args:
        seconds: Longest wait for the next message of an upload.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._open: dict[int, _Waiting] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], grpc.RpcMethodHandler[_TRequest, _TResponse] | None
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_TRequest, _TResponse] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.stream_unary is None:
            return handler
        behaviour = handler.stream_unary

        def watched(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return behaviour(self._watch(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(
            watched,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _watch(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        waiting = _Waiting(context)
        with self._lock:
            self._open[id(waiting)] = waiting
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="idle-uploads", daemon=True)
                self._thread.start()
        try:
            while True:
                waiting.since = time.monotonic()
                try:
                    request = next(requests)
                except StopIteration:
                    return
                except grpc.RpcError:
                    if waiting.timed_out:
                        raise TransportError(
                            f"the upload sent nothing for {self.seconds:g} s; it was ended "
                            "to free its slot"
                        ) from None
                    raise
                waiting.since = None
                yield request
        finally:
            with self._lock:
                del self._open[id(waiting)]

    def open_count(self) -> int:
        """Uploads being watched now."""
        with self._lock:
            return len(self._open)

    def stop(self) -> None:
        """Stops the checking thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        interval = min(self.seconds / 4, 1.0)
        while not self._stopping.wait(interval):
            now = time.monotonic()
            with self._lock:
                idle = [
                    w
                    for w in self._open.values()
                    if w.since is not None and not w.timed_out and now - w.since >= self.seconds
                ]
                for w in idle:
                    w.timed_out = True
            for w in idle:
                logger.warning("an upload sent nothing for %g s; ending it", self.seconds)
                w.context.cancel()
