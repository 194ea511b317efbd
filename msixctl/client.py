"""Talking to msixd: the channel, the stub, and errors turned into one clear line."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import grpc

from msixd.api.msix.v1 import msix_pb2_grpc

DEFAULT_SOCKET = "/run/msixd/msixd.sock"
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

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


class ClientError(Exception):
    """Something to tell the user in one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_DAEMON_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Tls:
    ca: str
    cert: str
    key: str

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str, what: str) -> bytes:
            try:
                with open(path, "rb") as stream:
                    return stream.read()
            except OSError as err:
                raise ClientError(f"cannot read the {what} {path}: {err.strerror}", EXIT_USAGE) from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "CA certificate"),
            private_key=read(self.key, "client key"),
            certificate_chain=read(self.cert, "client certificate"),
        )


def admin_socket(path: str) -> str:
    """msixd's socket for root and admins beside its readers' one: msixd.sock -> msixd-admin.sock.

    Each has its own listen queue: a reader flooding msixd.sock cannot keep an admin out.
    """
    directory, name = os.path.split(path)
    stem, dot, suffix = name.rpartition(".")
    return os.path.join(directory, f"{stem}-admin.{suffix}" if dot else f"{name}-admin")


@dataclass(frozen=True)
class Target:
    """Where msixd is: its Unix socket (the admins' one when this user may open it), or
    host:port over mutual TLS."""

    socket: str
    timeout: float
    tcp: str = ""
    tls: Tls | None = None

    @property
    def address(self) -> str:
        if self.tcp:
            return self.tcp
        admin = admin_socket(self.socket)
        chosen = admin if os.access(admin, os.R_OK | os.W_OK) else self.socket
        return f"unix:{os.path.abspath(chosen)}"

    def unreachable(self, reason: str) -> ClientError:
        return ClientError(
            f"cannot reach msixd at {self.address}: {reason} (is it running? systemctl start msixd)",
            EXIT_UNREACHABLE,
        )

    def check_socket(self) -> None:
        """Say precisely why a Unix socket cannot be used, before gRPC's generic UNAVAILABLE."""
        try:
            mode = os.stat(self.socket).st_mode
        except FileNotFoundError:
            raise self.unreachable("the socket does not exist") from None
        except PermissionError:
            raise self.unreachable("permission denied on its directory (run as root or in the msixd group)") from None
        if not stat.S_ISSOCK(mode):
            raise self.unreachable("the path is not a socket")
        if not os.access(self.socket, os.R_OK | os.W_OK):
            raise self.unreachable("permission denied (run as root or in the msixd group)")


@contextmanager
def connect(target: Target) -> Iterator[msix_pb2_grpc.MsixServiceStub]:
    if target.tcp:
        if target.tls is None:
            raise ClientError(
                "--target needs --ca, --cert and --key: msixd's TCP listener is mutual TLS only", EXIT_USAGE
            )
        channel = grpc.secure_channel(target.tcp, target.tls.credentials())
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
