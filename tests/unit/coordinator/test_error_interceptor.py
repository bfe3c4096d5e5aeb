"""The gRPC edge's error interceptor: codes and public messages for every handler shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
import pytest

from baton.errors import BatonError, ConflictError, PkiError, SealError, TransportError
from coordinator.api.errors import ErrorInterceptor


class FakeContext:
    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Exception  # as grpc does: a bare, argument-less Exception


class Details:
    method = "/baton.v1.SiteService/Test"
    invocation_metadata = ()


def _raise(exc: Exception) -> Callable[..., Any]:
    def behavior(request: object, context: object) -> Any:
        raise exc

    return behavior


def _stream_then_raise(exc: Exception) -> Callable[..., Iterator[int]]:
    def behavior(request: object, context: object) -> Iterator[int]:
        yield 1
        raise exc

    return behavior


SHAPES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _call(shape: str, exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    streaming = shape.endswith("_stream")
    behavior = _stream_then_raise(exc) if streaming else _raise(exc)
    handler: grpc.RpcMethodHandler[Any, Any] | None = ErrorInterceptor().intercept_service(
        lambda details: SHAPES[shape](behavior), cast(grpc.HandlerCallDetails, Details())
    )
    assert handler is not None
    wrapped = getattr(handler, shape)
    context = FakeContext()
    if streaming:
        result = wrapped(None, context)
        assert next(result) == 1  # what came before the error still arrives
        _aborts(lambda: next(result))
    else:
        _aborts(lambda: wrapped(None, context))
    return context.status


def _aborts(call: Callable[[], object]) -> None:
    with pytest.raises(Exception, match=r"^$") as caught:
        call()
    assert type(caught.value) is Exception


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (
            PkiError("certificate of site-x expired"),
            (grpc.StatusCode.PERMISSION_DENIED, "not authorized"),
        ),
        (
            SealError("bad_signature", "key mismatch"),
            (grpc.StatusCode.INVALID_ARGUMENT, "rejected"),
        ),
        (
            ConflictError("hop 1 is pending"),
            (grpc.StatusCode.FAILED_PRECONDITION, "hop 1 is pending"),
        ),
        (TransportError("peer gone"), (grpc.StatusCode.UNAVAILABLE, "peer gone")),
        (BatonError("plain"), (grpc.StatusCode.FAILED_PRECONDITION, "plain")),
        (KeyError("secret detail"), (grpc.StatusCode.INTERNAL, "internal error")),
    ],
)
def test_errors_become_their_status_and_public_message(
    shape: str, exc: Exception, status: tuple[grpc.StatusCode, str]
) -> None:
    assert _call(shape, exc) == status


def test_an_abort_the_handler_made_passes_through() -> None:
    def behavior(request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "mine")

    handler: grpc.RpcMethodHandler[Any, Any] | None = ErrorInterceptor().intercept_service(
        lambda details: grpc.unary_unary_rpc_method_handler(behavior),
        cast(grpc.HandlerCallDetails, Details()),
    )
    assert handler is not None
    assert handler.unary_unary is not None
    unary = handler.unary_unary
    context = FakeContext()
    _aborts(lambda: unary(None, cast(grpc.ServicerContext, context)))
    assert context.status == (grpc.StatusCode.OUT_OF_RANGE, "mine")


def test_an_unknown_method_stays_unknown() -> None:
    assert ErrorInterceptor().intercept_service(lambda details: None, cast(Any, Details())) is None
