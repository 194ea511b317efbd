"""msixd's listeners and gRPC servers: msix.v1, health checking and reflection, behind the Guard.

- The public Unix sockets are the Gateway's (one for readers, one for root
  and admins beside it: admin_socket()): it identifies each caller and
  relays it to one of three gRPC servers, one per class of caller (root,
  admins, readers), each with its own workers and bound on concurrent calls.
  They listen on Unix sockets in a directory only root may enter
  (`.<socket stem>.b/` beside the public socket, mode 0700), and answer
  a connection only when the gateway registered who is behind it.
- The optional mutual-TLS TCP listener (orchestration tools) is a fourth
  server with its own workers and a bound on connections, handshake time and
  idle time, enforced by gRPC itself.
"""

from __future__ import annotations

import os
import shutil
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
from msixd.rpc.access import Access, Peer, Role
from msixd.rpc.gateway import Gateway, Limits
from msixd.rpc.guard import Guard

SERVICE_NAME = msix_pb2.DESCRIPTOR.services_by_name["MsixService"].full_name
# A GetDevice answer for a 2048-entry table on a 1024-CPU host is ~10 MiB of
# per-CPU counts; requests are tiny. Both limits refuse anything larger.
MAX_RECEIVE_BYTES = 64 * 1024
MAX_SEND_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Pool:
    """One class of callers: its workers, and how many calls may run or wait at once."""

    name: str
    workers: int
    concurrent: int


POOLS = {
    "root": Pool("root", workers=16, concurrent=256),
    "admin": Pool("admin", workers=8, concurrent=64),
    "reader": Pool("reader", workers=8, concurrent=32),
    "tls": Pool("tls", workers=8, concurrent=64),
}


class SocketInUse(MsixdError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is served by another process (is msixd already running?)")
        self.path = path


def admin_socket(socket_path: Path) -> Path:
    """The socket for root and admins beside the readers' one: msixd.sock -> msixd-admin.sock."""
    return socket_path.with_name(f"{socket_path.stem}-admin{socket_path.suffix}")


def backend_dir(socket_path: Path) -> Path:
    """Where the gRPC servers listen: `.msixd.b/` beside msixd.sock. Its sockets (`.msixd.b/reader`,
    the longest) are no longer than msixd-admin.sock, so they fit wherever the public ones do."""
    return socket_path.with_name(f".{socket_path.stem}.b")


# sun_path in struct sockaddr_un (include/uapi/linux/un.h) holds 108 bytes, the last a NUL.
SUN_PATH_MAX = 107


def prepare_socket(path: Path) -> None:
    """Create the socket's directory and remove a stale socket (and its backends) left by a crash.

    A socket someone still accepts on is left alone: SocketInUse.
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise MsixdError(f"socket path too long for a Unix socket ({len(os.fsencode(path))} bytes, at most "
                         f"{SUN_PATH_MAX}): {path}")
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        shutil.rmtree(backend_dir(path), ignore_errors=True)
        return
    if not stat.S_ISSOCK(mode):
        raise MsixdError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink()  # nobody listens: left behind by a process that died
        shutil.rmtree(backend_dir(path), ignore_errors=True)
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


def _grpc_server(pool: Pool, guard: Guard, extra: list[tuple[str, int]] | None = None) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=pool.workers, thread_name_prefix=f"rpc-{pool.name}"),
        interceptors=[guard],
        maximum_concurrent_rpcs=pool.concurrent,
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
            *(extra or []),
        ],
    )


class Server:
    """msixd's listeners around its gRPC servers."""

    def __init__(
        self,
        servicer: msix_pb2_grpc.MsixServiceServicer,
        socket_path: Path,
        access: Access,
        limits: Limits,
        tcp_listen: str = "",
        tls: Tls | None = None,
    ) -> None:
        prepare_socket(socket_path)
        prepare_socket(admin_socket(socket_path))
        self.socket_path = socket_path
        self.admin_socket_path = admin_socket(socket_path)
        self.access = access
        self.health = health.HealthServicer()
        guard = Guard(access)
        self._backends = backend_dir(socket_path)
        self._backends.mkdir(mode=0o700)
        self._backends.chmod(0o700)  # whatever the umask: only root may enter
        self.servers: dict[str, grpc.Server] = {}
        for name in ("root", "admin", "reader"):
            server = self.servers[name] = _grpc_server(POOLS[name], guard)
            self._add_services(server, servicer)
            server.add_insecure_port(f"unix:{self._backends / name}")
        self.tcp_port = 0
        if tcp_listen:
            if tls is None:
                raise MsixdError("the TCP listener is mutual TLS only: configure tls_cert, tls_key and tls_client_ca")
            server = self.servers["tls"] = _grpc_server(POOLS["tls"], guard, [
                ("grpc.max_allowed_incoming_connections", limits.tls_connections),
                ("grpc.server_handshake_timeout_ms", 10_000),
                ("grpc.max_connection_idle_ms", int(limits.idle_seconds * 1000)),
                ("grpc.max_concurrent_streams", 16),
            ])
            self._add_services(server, servicer)
            try:
                self.tcp_port = server.add_secure_port(tcp_listen, tls.credentials())
            except RuntimeError as err:
                raise MsixdError(f"cannot listen on {tcp_listen}: {err}") from err
        self.gateway = Gateway([str(socket_path), str(self.admin_socket_path)], self._backend_for,
                               access.registry, limits)

    def _add_services(self, server: grpc.Server, servicer: msix_pb2_grpc.MsixServiceServicer) -> None:
        msix_pb2_grpc.add_MsixServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    def _backend_for(self, peer: Peer) -> str:
        if peer.is_root:
            pool = "root"
        elif self.access.role(peer) is Role.ADMIN:
            pool = "admin"
        else:
            pool = "reader"
        return str(self._backends / pool)

    def start(self) -> None:
        for server in self.servers.values():
            server.start()
        self.gateway.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float | None) -> None:
        """Stop accepting, let in-flight RPCs finish within grace seconds (streams are then
        cancelled, which wakes them), remove the sockets."""
        self.set_serving(False)
        self.gateway.stop_accepting()
        stopped = [server.stop(grace) for server in self.servers.values()]
        for event in stopped:
            event.wait()
        self.gateway.close()
        self.socket_path.unlink(missing_ok=True)
        self.admin_socket_path.unlink(missing_ok=True)
        shutil.rmtree(self._backends, ignore_errors=True)

