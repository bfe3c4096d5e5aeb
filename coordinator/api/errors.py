"""The gRPC edge: Baton errors become status codes with sanitized public messages."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, ParamSpec, TypeVar, cast

import grpc

from baton.errors import (
    BatonError,
    BlobError,
    ConfigError,
    ConflictError,
    Denied,
    NotFoundError,
    PkiError,
    SealError,
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Maps an error to (code, public message). Public messages never explain a rejection
    of identity beyond 'not authorized'; details stay in the local log."""
    if isinstance(exc, PkiError):
        return grpc.StatusCode.PERMISSION_DENIED, "not authorized"
    if isinstance(exc, SealError):
        return grpc.StatusCode.INVALID_ARGUMENT, "rejected"
    if isinstance(exc, Denied):
        return grpc.StatusCode.PERMISSION_DENIED, exc.message
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, exc.message
    if isinstance(exc, ConflictError):
        return grpc.StatusCode.FAILED_PRECONDITION, exc.message
    if isinstance(exc, ConfigError):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.message
    if isinstance(exc, BlobError):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.message
    if isinstance(exc, BatonError):
        return grpc.StatusCode.FAILED_PRECONDITION, exc.message
    return grpc.StatusCode.INTERNAL, "internal error"


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> NoReturn:
    code, public = _status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", method)
    else:
        logger.info("%s refused: %s (%s)", method, code.name, exc)
    context.abort(code, public)
    raise AssertionError("context.abort returned")  # pragma: no cover


def translate_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Decorates a servicer method (unary or streaming) so errors become gRPC statuses.

    The servicer context is the method's last positional argument, as grpc calls it.
    """
    name = method.__qualname__

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def gen_wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
            context = cast(grpc.ServicerContext, args[-1])
            try:
                yield from cast(Iterator[Any], method(*args, **kwargs))
            except Exception as exc:
                if _is_abort(exc):
                    raise
                _abort(context, exc, name)

        return cast(Callable[P, R], gen_wrapper)

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        context = cast(grpc.ServicerContext, args[-1])
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc, name)

    return wrapper


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare, argument-less Exception: let it through.
    return type(exc) is Exception and not exc.args
