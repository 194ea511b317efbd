"""Build the gRPC server: msix.v1, health checking and reflection, on a Unix socket."""

from __future__ import annotations

import os
import socket
import stat
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from msixd.api.msix.v1 import msix_pb2, msix_pb2_grpc
from msixd.errors import MsixdError

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


def create_server(
    servicer: msix_pb2_grpc.MsixServiceServicer, socket_path: Path, max_workers: int = 8
) -> tuple[grpc.Server, health.HealthServicer]:
    """A started-ready (not yet started) server bound to socket_path, and its health servicer."""
    prepare_socket(socket_path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ],
    )
    msix_pb2_grpc.add_MsixServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    old_umask = os.umask(0o117)  # the socket file is created 0660
    try:
        server.add_insecure_port(f"unix:{socket_path}")
    except RuntimeError as err:
        raise MsixdError(f"cannot listen on {socket_path}: {err}") from err
    finally:
        os.umask(old_umask)
    return server, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, status)
