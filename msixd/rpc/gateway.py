"""The Unix socket msixd serves: identify each caller at accept time, relay it to a gRPC backend.

gRPC does not expose a Unix peer's credentials (grpc/grpc#15511), so msixd
accepts on its public socket itself, takes the credentials the kernel recorded
at connect time (SO_PEERCRED, SO_PEERGROUPS), and relays the connection to
one of its gRPC servers. Those listen on Unix sockets in a directory only
root may enter, one server per class of caller (root, admins, readers) with
its own workers, so a reader can never take an admin's or root's worker.
Each relayed connection is bound to a random abstract address, under which
the caller's identity is registered (Access.identify looks it up).

One thread relays every connection with non-blocking sockets and epoll: a
connection costs two file descriptors here and one in gRPC, and no thread.
What a caller can make msixd spend is bounded (Limits): connections per uid,
for all non-root callers together, and for root on its own budget, so the
bound for strangers never eats into root's share; a connection that says
nothing for `idle_seconds` is closed; a slow reader stops its peer being read
(at most a buffer each way). Running out of file descriptors anyway never
stops the accept loop.
"""

from __future__ import annotations

import errno
import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from msixd.kernel.peercred import peer_credentials
from msixd.rpc.access import Peer, PeerRegistry
from msixd.rpc.logbudget import LogBudget
from msixd.rpc.waker import Waker

log = structlog.get_logger(__name__)
_CHUNK = 64 * 1024
# Bytes queued for a slow reader before its peer is no longer read (then the kernel's socket
# buffers and HTTP/2 flow control hold the rest): a connection costs msixd at most about this
# plus one chunk in each direction, whatever its client does.
_BUFFERED = 256 * 1024
_SWEEP_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """Bounds on what callers can make msixd spend (see Limits.for_files)."""

    connections_per_uid: int = 64
    connections_others: int = 1024  # every non-root Unix caller together
    connections_root: int = 512
    tls_connections: int = 256
    metrics_connections: int = 16
    idle_seconds: float = 120.0
    streams_per_caller: int = 4

    @classmethod
    def for_files(cls, nofile: int, idle_seconds: float = 120.0) -> Limits:
        """Limits that fit within `nofile` descriptors, half of them kept for VFIO and eventfds.

        A relayed connection costs three descriptors (the caller's, the relay's and
        gRPC's end of it); a TLS or metrics connection one.
        """
        budget = max(nofile // 2 - 64, 96)
        connections = budget // 4  # a quarter each: root, other Unix callers (x3 descriptors), TLS
        root = max(connections // 3, 8)
        others = max(connections // 3, 8)
        return cls(
            connections_per_uid=max(min(64, others // 8), 4),
            connections_others=others,
            connections_root=root,
            tls_connections=max(connections, 8),
            metrics_connections=max(min(16, budget // 64), 4),
            idle_seconds=idle_seconds,
        )


class _End:
    __slots__ = ("sock", "out", "eof", "shut", "mask")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()  # bytes waiting to be written to this end
        self.eof = False  # this end will send no more
        self.shut = False  # this end's write side was shut down
        self.mask = 0  # the events registered for it


class _Link:
    __slots__ = ("client", "backend", "name", "peer", "active", "closed")

    def __init__(self, client: socket.socket, backend: socket.socket, name: str, peer: Peer) -> None:
        self.client = _End(client)
        self.backend = _End(backend)
        self.name = name
        self.peer = peer
        self.active = time.monotonic()
        self.closed = False

    def other(self, end: _End) -> _End:
        return self.backend if end is self.client else self.client


class Gateway:
    """Accept on each of `paths` (mode 0660: the socket's group may connect) and relay.

    Two sockets, as libvirt has: one for readers and one for admins. Each has its
    own listen queue in the kernel, which the file's group decides who may fill:
    a reader connecting as fast as it can fills only the readers' queue, and root
    and the admins still get in through theirs.
    backend_for(peer) names the backend socket a caller's connection goes to.
    """

    def __init__(self, paths: list[str], backend_for: Callable[[Peer], str], registry: PeerRegistry,
                 limits: Limits) -> None:
        self._backend_for = backend_for
        self._registry = registry
        self.limits = limits
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        for path in paths:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old = os.umask(0o117)
            try:
                listener.bind(path)
            finally:
                os.umask(old)
            listener.listen(1024)
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, "listener")
            self._listeners.append(listener)
        self._waker = Waker(self._selector)
        self._links: set[_Link] = set()
        self._per_uid: dict[int, int] = {}
        self._root = 0
        self._others = 0
        self._reserve: int | None = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._closing = threading.Event()
        self._refuse = threading.Event()
        self._accepting_stopped = threading.Event()
        self._budget = LogBudget(lines=5, seconds=10.0)
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    # Lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listener; connections already relayed go on (their calls may finish)."""
        self._refuse.set()
        self._wake()
        self._accepting_stopped.wait(timeout=5)

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._refuse.set()
        self._closing.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        else:
            self._close_listeners()

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()

    def _wake(self) -> None:
        self._waker.wake()

    @property
    def connections(self) -> int:
        return len(self._links)

    # The loop

    def _run(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        try:
            while not self._closing.is_set():
                self.heartbeat = now = time.monotonic()
                for key, mask in self._selector.select(timeout=_SWEEP_SECONDS):
                    if key.data == "listener":
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif key.data == "wake":
                        self._waker.drain()
                    else:
                        link, end = key.data
                        self._service(link, end, mask)
                if self._refuse.is_set() and not self._accepting_stopped.is_set():
                    for listener in self._listeners:
                        self._selector.unregister(listener)
                    self._close_listeners()
                    self._accepting_stopped.set()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_SECONDS
        except Exception:  # noqa: BLE001 - logged; liveness reports the gateway stuck
            log.exception("gateway loop failed")
            raise
        finally:
            for link in list(self._links):
                self._close(link)
            if not self._accepting_stopped.is_set():
                self._close_listeners()
                self._accepting_stopped.set()
            self._selector.close()
            self._waker.close()
            if self._reserve is not None:
                os.close(self._reserve)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a batch, then the relayed connections get their turn
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed(listener)
                    return
                if err.errno in (errno.ECONNABORTED, errno.EINTR, errno.EPROTO):
                    continue
                if self._budget.allow("accept"):
                    log.warning("accept failed; still accepting", error=os.strerror(err.errno or 0))
                return
            self._admit(client)

    def _shed(self, listener: socket.socket) -> None:
        """Out of descriptors: take one connection off the queue and close it, so the
        queue does not wake the loop forever (the limits should keep this from happening)."""
        if self._budget.allow("nofile"):
            log.error("out of file descriptors: refusing connections", connections=len(self._links))
        if self._reserve is None:
            return
        os.close(self._reserve)
        self._reserve = None
        try:
            client, _ = listener.accept()
            client.close()
        except OSError:
            pass
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._reserve = None

    def _admit(self, client: socket.socket) -> None:
        try:
            credentials = peer_credentials(client)
        except OSError:
            client.close()
            return
        peer = Peer(uid=credentials.uid, gid=credentials.gid, pid=credentials.pid, groups=credentials.groups)
        refusal = self._over_limit(peer)
        if refusal:
            if self._budget.allow(peer.key):
                log.warning("connection refused", reason=refusal, uid=peer.uid, pid=peer.pid)
            client.close()
            return
        name = f"msixd-{secrets.token_hex(16)}"
        backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            backend.bind(f"\0{name}")
            self._registry.add(name, peer)  # before connecting: the server may look it up at once
            backend.connect(self._backend_for(peer))
        except OSError as err:
            self._registry.remove(name)
            backend.close()
            client.close()
            if self._budget.allow("backend"):
                log.warning("cannot relay a connection", error=os.strerror(err.errno or 0), uid=peer.uid)
            return
        client.setblocking(False)
        link = _Link(client, backend, name, peer)
        self._count(peer, +1)
        self._links.add(link)
        self._update(link)

    def _over_limit(self, peer: Peer) -> str:
        limits = self.limits
        if peer.is_root:
            return "" if self._root < limits.connections_root else f"root already holds {self._root} connections"
        uid = peer.uid if peer.uid is not None else -1
        if self._per_uid.get(uid, 0) >= limits.connections_per_uid:
            return f"uid {uid} already holds {limits.connections_per_uid} connections"
        if self._others >= limits.connections_others:
            return f"non-root callers already hold {self._others} connections"
        return ""

    def _count(self, peer: Peer, delta: int) -> None:
        if peer.is_root:
            self._root += delta
            return
        uid = peer.uid if peer.uid is not None else -1
        self._others += delta
        held = self._per_uid.get(uid, 0) + delta
        if held:
            self._per_uid[uid] = held
        else:
            self._per_uid.pop(uid, None)

    # Relaying

    def _service(self, link: _Link, end: _End, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(link, end)
            if mask & selectors.EVENT_READ and not link.closed:
                self._read(link, end)
        except OSError:
            self._close(link)
            return
        if not link.closed:
            self._update(link)

    def _read(self, link: _Link, end: _End) -> None:
        try:
            data = end.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        other = link.other(end)
        if not data:
            end.eof = True
            if not other.out:
                self._shut(other)
            return
        link.active = time.monotonic()
        if other.out:
            other.out += data
            return
        try:
            sent = other.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            other.out += data[sent:]

    def _flush(self, link: _Link, end: _End) -> None:
        try:
            sent = end.sock.send(end.out)
        except BlockingIOError:
            return
        del end.out[:sent]
        link.active = time.monotonic()
        if not end.out and link.other(end).eof:
            self._shut(end)

    def _shut(self, end: _End) -> None:
        if not end.shut:
            end.shut = True
            try:
                end.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _update(self, link: _Link) -> None:
        """Register each end for what it can do now; close the link when both sides are done."""
        if link.client.eof and link.backend.eof and not link.client.out and not link.backend.out:
            self._close(link)
            return
        for end in (link.client, link.backend):
            other = link.other(end)
            mask = 0
            if not end.eof and len(other.out) < _BUFFERED:
                mask |= selectors.EVENT_READ
            if end.out:
                mask |= selectors.EVENT_WRITE
            if mask == end.mask:
                continue
            if end.mask == 0:
                self._selector.register(end.sock, mask, (link, end))
            elif mask == 0:
                self._selector.unregister(end.sock)
            else:
                self._selector.modify(end.sock, mask, (link, end))
            end.mask = mask
        if link.client.mask == 0 and link.backend.mask == 0:
            self._close(link)  # nothing left that could make progress

    def _close(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        self._registry.remove(link.name)
        for end in (link.client, link.backend):
            if end.mask:
                self._selector.unregister(end.sock)
                end.mask = 0
            end.sock.close()
        self._links.discard(link)
        self._count(link.peer, -1)

    def _sweep(self, now: float) -> None:
        idle = [link for link in self._links if now - link.active > self.limits.idle_seconds]
        for link in idle:
            self._close(link)
        if idle:
            log.debug("idle connections closed", count=len(idle))
