"""Talking to msixd: the channel, the stub, and errors turned into one clear line."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc

from msixctl.errors import EXIT_USAGE, ClientError
from msixctl.target import Target
from msixd.api.msix.v1 import msix_pb2_grpc

T = TypeVar("T")

# What grpc-core itself puts in an UNAVAILABLE status when no answer came from the server: no
# connection could be made (the pick_first policy's "failed to connect to all addresses", followed by
# the reason: refused, no such socket, a TLS handshake failure), or the connection was lost or shut
# down during the call. Any other UNAVAILABLE carries words the server chose: msixd was reached.
_TRANSPORT_FAILURE = re.compile(
    r"failed to connect to all addresses|connections to all backends failing|socket closed|connection reset"
    r"|broken pipe|goaway|cancelling all calls|endpoint closing|keepalive watchdog timeout",
    re.IGNORECASE,
)


@contextmanager
def connect(target: Target) -> Iterator[msix_pb2_grpc.MsixServiceStub]:
    if target.tcp:
        if target.tls is None:
            raise ClientError(
                "--target needs --ca, --cert and --key: msixd's TCP listener is mutual TLS only", EXIT_USAGE
            )
        ca, key, cert = target.tls.files()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(target.tcp, credentials)
    else:
        target.check_socket()
        channel = grpc.insecure_channel(target.address)
    with channel:
        yield msix_pb2_grpc.MsixServiceStub(channel)


def call(target: Target, method: Callable[[msix_pb2_grpc.MsixServiceStub], T]) -> T:
    """Run one RPC; every failure becomes a ClientError with a one-line message."""
    with connect(target) as stub:
        try:
            return method(stub)
        except grpc.RpcError as err:
            raise translate(target, err) from None


def translate(target: Target, err: grpc.RpcError) -> ClientError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.UNAVAILABLE and (not details or _TRANSPORT_FAILURE.search(details)):
        if target.tcp:
            return target.unreachable(f"{details} (a TLS handshake failure means the certificates do not match)")
        if "connection refused" in (details or "").lower():
            return target.unreachable("connection refused: nobody listens on the socket")
        return target.unreachable(details or "the connection failed")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(f"msixd did not answer within {target.timeout:g} s (--timeout to wait longer)")
    return ClientError(f"{details} [{code.name}]")
