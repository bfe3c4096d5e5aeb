"""The gRPC edge's one error translator: Baton errors become status codes with sanitized
public messages; anything else is an INTERNAL error whose details stay in the local log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from baton.errors import BatonError

logger = logging.getLogger(__name__)

_TRequest = TypeVar("_TRequest")
_TResponse = TypeVar("_TResponse")


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Maps an error to (code, public message): a :class:`~baton.errors.BatonError` to its
    own ``grpc_status`` and ``public_message``, anything else to INTERNAL."""
    if isinstance(exc, BatonError):
        return grpc.StatusCode[exc.grpc_status], exc.public_message
    return grpc.StatusCode.INTERNAL, "internal error"


class ErrorInterceptor(grpc.ServerInterceptor):
    """Wraps every handler, unary or streaming either way, so an error it raises aborts the
    call with :func:`status_for`'s code and message. An abort the handler made itself
    passes through unchanged."""

    def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], grpc.RpcMethodHandler[_TRequest, _TResponse] | None
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_TRequest, _TResponse] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        codec: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, method), **codec
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, method), **codec
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, method), **codec
            )
        return handler  # pragma: no cover - grpc always sets one behaviour


def _unary(
    behavior: Callable[[Any, grpc.ServicerContext], Any], method: str
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc, method)

    return wrapper


def _streaming(
    behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc, method)

    return wrapper


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> NoReturn:
    code, public = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("%s failed", method, exc_info=exc)
    else:
        logger.info("%s refused: %s (%s)", method, code.name, exc)
    context.abort(code, public)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare, argument-less Exception: let it through.
    return type(exc) is Exception and not exc.args
