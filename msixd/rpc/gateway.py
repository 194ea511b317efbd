"""The Unix socket msixd serves, relayed to its gRPC server with the caller's credentials.

gRPC does not expose SO_PEERCRED (grpc/grpc#15511), so msixd accepts on the
public socket itself, reads the peer's uid/gid/pid, registers them under the
loopback source port of a new connection to the gRPC server, and relays bytes
both ways. The gRPC server listens on 127.0.0.1 only, and answers nothing to a
connection whose port is not registered (Access.identify).
"""

from __future__ import annotations

import os
import socket
import struct
import threading

import structlog

from msixd.kernel import procs
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import Peer, PeerRegistry

log = structlog.get_logger(__name__)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


class Gateway:
    def __init__(self, path: str, backend_port: int, registry: PeerRegistry, roots: KernelRoots) -> None:
        self._path = path
        self._backend = ("127.0.0.1", backend_port)
        self._registry = registry
        self._roots = roots
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)  # 0660: the group's members may connect
        try:
            self._listener.bind(path)
        finally:
            os.umask(old)
        self._listener.listen(128)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="gateway", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), name="relay", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        pid, uid, gid = peer_credentials(client)
        peer = Peer(uid=uid, gid=gid, pid=pid, groups=procs.groups_of(self._roots, pid))
        backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        backend.bind(("127.0.0.1", 0))
        port = backend.getsockname()[1]
        self._registry.add(port, peer)  # before connecting: the server may look it up at once
        try:
            backend.connect(self._backend)
            backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pump = threading.Thread(target=_pump, args=(backend, client), name="relay", daemon=True)
            pump.start()
            _pump(client, backend)
            pump.join()
        except OSError as err:
            log.debug("relay ended", uid=uid, pid=pid, error=str(err))
        finally:
            self._registry.remove(port)
            client.close()
            backend.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF, then half-close the sink so the other direction can finish."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
