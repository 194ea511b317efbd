"""Build the gRPC server: msix.v1, health checking and reflection.

Listeners: the Unix socket (through the Gateway, which knows each peer's
credentials), and optionally a mutual-TLS TCP port for orchestration tools.
The gRPC server itself listens on 127.0.0.1 only, for the gateway.
"""

from __future__ import annotations

import socket
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from msixd.api.msix.v1 import msix_pb2, msix_pb2_grpc
from msixd.errors import MsixdError
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import PeerRegistry
from msixd.rpc.gateway import Gateway

SERVICE_NAME = msix_pb2.DESCRIPTOR.services_by_name["MsixService"].full_name
# A GetDevice answer for a 2048-entry table on a 1024-CPU host is ~10 MiB of
# per-CPU counts; requests are tiny. Both limits refuse anything larger.
MAX_RECEIVE_BYTES = 64 * 1024
MAX_SEND_BYTES = 64 * 1024 * 1024


class SocketInUse(MsixdError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is served by another process (is msixd already running?)")
        self.path = path


def prepare_socket(path: Path) -> None:
    """Create the socket's directory and remove a stale socket left by a crash.

    A socket someone still accepts on is left alone: SocketInUse.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise MsixdError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink()  # nobody listens: left behind by a process that died
        return
    finally:
        probe.close()
    raise SocketInUse(path)


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    client_ca: Path

    def credentials(self) -> grpc.ServerCredentials:
        try:
            pair = (self.key.read_bytes(), self.cert.read_bytes())
            ca = self.client_ca.read_bytes()
        except OSError as err:
            raise MsixdError(f"cannot read TLS files: {err}") from err
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


class Server:
    """msixd's listeners around one gRPC server."""

    def __init__(
        self,
        servicer: msix_pb2_grpc.MsixServiceServicer,
        socket_path: Path,
        registry: PeerRegistry,
        tcp_listen: str = "",
        tls: Tls | None = None,
        max_workers: int = 16,
    ) -> None:
        prepare_socket(socket_path)
        self.socket_path = socket_path
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        msix_pb2_grpc.add_MsixServiceServicer_to_server(servicer, self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        backend_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.tcp_port = 0
        if tcp_listen:
            if tls is None:
                raise MsixdError("the TCP listener is mutual TLS only: configure tls_cert, tls_key and tls_client_ca")
            try:
                self.tcp_port = self.grpc.add_secure_port(tcp_listen, tls.credentials())
            except RuntimeError as err:
                raise MsixdError(f"cannot listen on {tcp_listen}: {err}") from err
        # Peers are live processes even when msixd serves a captured tree: their
        # groups come from the live /proc.
        self.gateway = Gateway(str(socket_path), backend_port, registry, KernelRoots())

    def start(self) -> None:
        self.grpc.start()
        self.gateway.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float | None) -> None:
        """Stop accepting, let in-flight RPCs finish within grace seconds, remove the socket."""
        self.set_serving(False)
        self.gateway.close()
        self.grpc.stop(grace).wait()
        self.socket_path.unlink(missing_ok=True)
