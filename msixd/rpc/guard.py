"""The boundary every RPC crosses, for every service msixd serves (msix.v1, health, reflection).

A server interceptor wraps each method's handler: it identifies the caller
from the connection (Access.identify), checks the call against the caller's
role (Access.check), and only then binds the request's log context (rpc,
request id, peer). A refused call costs one log line at most, within a
per-caller budget, and nothing it sent is logged. Handlers reach the caller
through `current_peer()`.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from msixd.rpc.access import Access, Peer, PermissionDenied, split_method
from msixd.rpc.logbudget import LogBudget

log = structlog.get_logger(__name__)
_PEER: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("msixd_peer", default=None)
_request_ids = itertools.count(1)


def current_peer() -> Peer:
    peer = _PEER.get()
    if peer is None:
        raise RuntimeError("no identified caller: the handler ran outside the Guard")
    return peer


class Guard(grpc.ServerInterceptor):
    def __init__(self, access: Access, denials: LogBudget | None = None) -> None:
        self._access = access
        self._denials = denials or LogBudget(lines=5, seconds=10.0)
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(method, handler)
        if len(self._wrapped) < 256:  # method names come from callers: cache only a bounded number
            self._wrapped[method] = wrapped
        return wrapped

    def _admit(self, method: str, request: object, context: grpc.ServicerContext) -> Peer:
        try:
            peer = self._access.identify(context)
            self._access.check(peer, method, request)
            return peer
        except PermissionDenied as err:
            who = err.peer.key if err.peer else "unidentified"
            suppressed = self._denials.take(who)
            if suppressed is not None:
                who_fields: dict[str, object] = {"rpc": split_method(method)[1][:64]}
                if err.peer is not None:
                    who_fields.update(uid=err.peer.uid, pid=err.peer.pid, tls=list(err.peer.tls_names) or None)
                log.warning("permission denied", error=str(err), suppressed_before=suppressed or None, **who_fields)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
            raise  # abort raises; this keeps type checkers and readers sure of it

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        name = split_method(method)[1]
        admit = self._admit

        def bound(peer: Peer) -> Any:
            _PEER.set(peer)
            return structlog.contextvars.bound_contextvars(rpc=name, request_id=next(_request_ids),
                                                           peer=peer.describe())

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                peer = admit(method, request, context)
                with bound(peer):
                    return inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                peer = admit(method, request, context)
                with bound(peer):
                    yield from inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                peer = admit(method, None, context)
                with bound(peer):
                    return inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, handler.request_deserializer, handler.response_serializer)
        inner_ss = handler.stream_stream
        assert inner_ss is not None

        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            peer = admit(method, None, context)
            with bound(peer):
                yield from inner_ss(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer)
