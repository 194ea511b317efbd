"""The lease socket: vectors handed to processes over SCM_RIGHTS, beside the gRPC sockets.

gRPC cannot carry file descriptors, so leases have their own Unix socket
(`msixd-lease.sock` beside msixd.sock, mode 0660, group socket_group) and a
small exchange of JSON lines, documented in docs/leases.md:

    client -> msixd  {"lease": {"bdf": "0000:00:09.0", "vectors": "0-3"}, "grow": false,
                      "device_fd": false, "on_return": "own"}   ("count": N instead of "vectors")
    msixd -> client  {"ok": true, "lease": "<id>", "bdf": ..., "vectors": [{"index": 0, "irq": 41}, ...],
                      "device_fd": false, "fds": 4}   with the fds as SCM_RIGHTS: the eventfds in
                      vector order, then the device file
                 or  {"ok": false, "code": "PERMISSION_DENIED", "error": "..."}
    later            {"event": "revoked", "reason": "..."}, then msixd closes

One lease per connection; it lasts until the connection closes, whoever closes
it. The caller is known by the credentials the kernel recorded at connect
time (SO_PEERCRED, SO_PEERGROUPS), as on the gRPC sockets. Bounds as the
gateway's (Limits): connections per uid, for non-root callers together and
for root; a connection that has not asked for its lease within idle_seconds
is closed, a lease's connection never idles out. The kernel passes at most
SCM_MAX_FD (253) descriptors per message (include/net/scm.h), so a larger
lease's reply is sent in pieces, each carrying up to 253.
"""

from __future__ import annotations

import array
import json
import os
import selectors
import socket
import threading
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from msixd.errors import InvalidArgument, InvalidCpuList, MsixdError, ResourceExhausted
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.peercred import peer_credentials
from msixd.rpc.access import Access, Peer, Role
from msixd.rpc.errors import status_code
from msixd.rpc.gateway import Limits
from msixd.rpc.logbudget import LogBudget
from msixd.rpc.waker import Waker
from msixd.service.fdstore import NO_STORE, FdStore, lease_name
from msixd.service.leases import Grant, Holder, Lease, LeaseRequest, Leases, Return

log = structlog.get_logger(__name__)
SCM_MAX_FD = 253
MAX_REQUEST = 4096  # bytes of a request line: it names a device and a few options
SEND_TIMEOUT = 10.0  # seconds a client may take to read its reply
_REQUEST_KEYS = frozenset({"lease", "grow", "device_fd", "on_return"})
_LEASE_KEYS = frozenset({"bdf", "vectors", "count"})


def lease_socket(socket_path: Path) -> Path:
    """The lease socket beside the readers' one: msixd.sock -> msixd-lease.sock."""
    return socket_path.with_name(f"{socket_path.stem}-lease{socket_path.suffix}")


def parse_request(line: bytes) -> LeaseRequest:
    """One request line -> LeaseRequest; InvalidArgument saying what is wrong."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        raise InvalidArgument("a lease request is one JSON object on one line (see docs/leases.md)") from None
    if not isinstance(request, dict):
        raise InvalidArgument("a lease request is a JSON object")
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise InvalidArgument(f"unknown key {unknown[0][:40]!r} (known: {', '.join(sorted(_REQUEST_KEYS))})")
    lease = request.get("lease")
    if not isinstance(lease, dict) or not isinstance(lease.get("bdf"), str):
        raise InvalidArgument('"lease" must be {"bdf": "DDDD:BB:DD.F", "vectors": "0-3"} or {"bdf": ..., "count": N}')
    unknown = sorted(set(lease) - _LEASE_KEYS)
    if unknown:
        raise InvalidArgument(f"unknown key {unknown[0][:40]!r} in \"lease\" (known: bdf, vectors, count)")
    vectors, count = lease.get("vectors"), lease.get("count")
    if (vectors is None) == (count is None):
        raise InvalidArgument('"lease" names either "vectors" or "count"')
    wanted: frozenset[int] | None = None
    if isinstance(vectors, str):
        try:
            wanted = parse_cpulist(vectors)
        except InvalidCpuList:
            raise InvalidArgument(f"invalid vector list {vectors[:40]!r}: expected e.g. \"0-3,8\"") from None
    elif isinstance(vectors, list) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2048
                                           for v in vectors) and vectors:
        wanted = frozenset(vectors)
    elif vectors is not None:
        raise InvalidArgument('"vectors" is a list such as "0-3,8" or [0, 1, 2, 3] (MSI-X indexes 0 to 2047)')
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 2048):
        raise InvalidArgument('"count" is a number of vectors, 1 to 2048')
    flags = {}
    for key in ("grow", "device_fd"):
        value = request.get(key, False)
        if not isinstance(value, bool):
            raise InvalidArgument(f'"{key}" is true or false')
        flags[key] = value
    on_return = request.get("on_return", "own")
    if on_return not in ("own", "release"):
        raise InvalidArgument('"on_return" is "own" (msixd takes the vectors back) or "release"')
    return LeaseRequest(lease["bdf"], wanted, count, flags["grow"], flags["device_fd"], Return(on_return))


def reply(grant: Grant) -> dict[str, Any]:
    lease = grant.lease
    return {"ok": True, "lease": lease.id, "bdf": lease.bdf,
            "vectors": [{"index": i, "irq": irq} for i, irq in zip(lease.vectors, lease.irqs, strict=True)],
            "device_fd": lease.device_fd, "fds": len(grant.fds)}


def send_with_fds(sock: socket.socket, data: bytes, fds: tuple[int, ...]) -> None:
    """Send data with fds attached as SCM_RIGHTS, at most SCM_MAX_FD per message (blocking socket)."""
    pieces = max(1, -(-len(fds) // SCM_MAX_FD))
    if pieces > len(data):
        raise ValueError("more descriptors than bytes to carry them")
    step = -(-len(data) // pieces)
    for piece in range(pieces):
        chunk = data[piece * step: (piece + 1) * step]
        batch = fds[piece * SCM_MAX_FD: (piece + 1) * SCM_MAX_FD]
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", batch).tobytes())] if batch else []
        sent = sock.sendmsg([chunk], ancillary)
        if sent < len(chunk):
            sock.sendall(chunk[sent:])


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: Peer
    since: float
    buffer: bytearray = field(default_factory=bytearray)
    lease: str | None = None
    busy: bool = False  # a worker is granting and answering
    closed: bool = False


class LeaseServer:
    def __init__(self, path: Path, leases: Leases, access: Access, limits: Limits, workers: int = 4,
                 store: FdStore = NO_STORE) -> None:
        self.path = path
        self._leases = leases
        self._store = store
        self._access = access
        self.limits = limits
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)
        try:
            self._listener.bind(str(path))
        finally:
            os.umask(old)
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._waker = Waker(self._selector)
        self._conns: set[_Conn] = set()
        self._by_lease: dict[str, _Conn] = {}
        self._per_uid: dict[int, int] = {}
        self._root = self._others = 0
        self._done: deque[tuple[_Conn, str | None]] = deque()  # a worker finished: the lease, or None
        self._revoked: deque[tuple[str, str]] = deque()
        self._early: dict[str, str] = {}  # revoked before the loop had the lease's connection
        self._workers = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lease")
        self._budget = LogBudget(lines=5, seconds=10.0)
        self._stop = threading.Event()
        self._keep = False
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        leases.notify = self.revoked

    # Lifecycle

    def start(self) -> None:
        self._thread.start()

    def adopt(self, lease: Lease, fd: int) -> None:
        """A lease's connection handed back from systemd's store at start (before start())."""
        holder = lease.holder
        peer = Peer(uid=holder.uid, gid=holder.gid, pid=holder.pid, groups=holder.groups)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        conn = _Conn(sock, peer, time.monotonic(), lease=lease.id)
        self._count(peer, +1)
        self._conns.add(conn)
        self._by_lease[lease.id] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def stop(self, keep_leases: bool = False) -> None:
        """Stop accepting. Leases end (their connections close) unless keep_leases: then their
        connections stay open in whoever else holds them (systemd's file descriptor store)."""
        self._keep = keep_leases
        self._stop.set()
        self._wake()
        self._thread.join(timeout=10)
        self._workers.shutdown(wait=True)
        self.path.unlink(missing_ok=True)

    def revoked(self, lease: str, reason: str) -> None:
        """A lease was revoked: tell its holder and close. Any thread, any lock held: it only queues."""
        self._revoked.append((lease, reason))
        self._wake()

    def _wake(self) -> None:
        self._waker.wake()

    @property
    def connections(self) -> int:
        return len(self._conns)

    # The loop

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = now = time.monotonic()
                for key, _ in self._selector.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.data == "wake":
                        self._waker.drain()
                    else:
                        self._readable(key.data)
                while self._done:
                    self._finished(*self._done.popleft())
                while self._revoked:
                    self._tell_revoked(*self._revoked.popleft())
                for conn in [c for c in self._conns if c.lease is None and not c.busy
                             and now - c.since > self.limits.idle_seconds]:
                    self._close(conn)
        except Exception:  # noqa: BLE001 - logged; liveness reports the loop stuck
            log.exception("lease loop failed")
            raise
        finally:
            for conn in list(self._conns):
                if conn.lease is not None and not self._keep:
                    self._leases.end(conn.lease, "msixd is stopping")
                self._close(conn)
            self._selector.close()
            self._listener.close()
            self._waker.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if self._budget.allow("accept"):
                    log.warning("lease socket: accept failed", error=os.strerror(err.errno or 0))
                return
            try:
                credentials = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            peer = Peer(uid=credentials.uid, gid=credentials.gid, pid=credentials.pid, groups=credentials.groups)
            refusal = self._over_limit(peer)
            if refusal:
                if self._budget.allow(peer.key):
                    log.warning("lease connection refused", reason=refusal, uid=peer.uid, pid=peer.pid)
                try:
                    sock.setblocking(False)
                    sock.send(_error(ResourceExhausted(f"{refusal}: end one first")))
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer, time.monotonic())
            self._count(peer, +1)
            self._conns.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _over_limit(self, peer: Peer) -> str:
        if peer.is_root:
            held = self._root
            return f"root already holds {held} lease connections" if held >= self.limits.connections_root else ""
        uid = peer.uid if peer.uid is not None else -1
        if self._per_uid.get(uid, 0) >= self.limits.connections_per_uid:
            return f"uid {uid} already holds {self.limits.connections_per_uid} lease connections"
        if self._others >= self.limits.connections_others:
            return f"non-root callers already hold {self._others} lease connections"
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

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if conn.lease is not None:  # a lease's connection says nothing more: EOF, an error or a stray byte end it
            self._leases.end(conn.lease, "the holder closed its connection" if not data
                             else "the holder sent more than its request")
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.buffer += data
        newline = conn.buffer.find(b"\n")
        if newline < 0:
            if len(conn.buffer) >= MAX_REQUEST:
                self._answer_now(conn, InvalidArgument(f"a lease request is at most {MAX_REQUEST} bytes"))
            return
        line = bytes(conn.buffer[:newline])
        try:
            request = parse_request(line)
        except InvalidArgument as err:
            self._answer_now(conn, err)
            return
        conn.busy = True
        self._selector.unregister(conn.sock)
        self._workers.submit(self._grant, conn, request)

    def _answer_now(self, conn: _Conn, err: MsixdError) -> None:
        try:
            conn.sock.send(_error(err))
        except OSError:
            pass
        self._close(conn)

    # A worker: grant, answer with the descriptors, and hand the connection back to the loop.

    def _grant(self, conn: _Conn, request: LeaseRequest) -> None:
        peer = conn.peer
        assert peer.uid is not None and peer.gid is not None and peer.pid is not None
        holder = Holder(peer.uid, peer.gid, peer.pid, peer.groups)
        lease: str | None = None
        fds: tuple[int, ...] = ()
        try:
            try:
                grant = self._leases.grant(holder, self._access.role(peer) is Role.ADMIN, request)
            except MsixdError as err:
                log.info("lease refused", code=status_code(err).name, error=str(err), uid=peer.uid, pid=peer.pid)
                answer = _error(err)
            else:
                lease, fds = grant.lease.id, grant.fds
                answer = (json.dumps(reply(grant)) + "\n").encode()
            try:
                conn.sock.settimeout(SEND_TIMEOUT)
                send_with_fds(conn.sock, answer, fds)
                conn.sock.setblocking(False)
            except OSError as err:
                if lease is not None:
                    self._leases.end(lease, f"the answer could not be sent: {os.strerror(err.errno or 0)}")
                    lease = None
            finally:
                for fd in fds:
                    os.close(fd)
        except Exception:  # noqa: BLE001 - the daemon outlives any request
            log.exception("lease request crashed", uid=peer.uid)
            if lease is not None:
                self._leases.end(lease, "msixd failed while answering")
                lease = None
            try:
                conn.sock.send(b'{"ok": false, "code": "INTERNAL", "error": "internal error; see the msixd log"}\n')
            except OSError:
                pass
        self._done.append((conn, lease))
        self._wake()

    def _finished(self, conn: _Conn, lease: str | None) -> None:
        conn.busy = False
        if lease is None:
            self._close(conn)
            return
        conn.lease = lease
        self._by_lease[lease] = conn
        self._store.keep(lease_name(lease), conn.sock.fileno())
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        reason = self._early.pop(lease, None)
        if reason is not None:  # revoked before its answer was sent
            self._tell(conn, reason)

    def _tell_revoked(self, lease: str, reason: str) -> None:
        conn = self._by_lease.get(lease)
        if conn is not None:
            self._tell(conn, reason)
        elif len(self._early) < 4096:  # its worker has not handed the connection back yet
            self._early[lease] = reason

    def _tell(self, conn: _Conn, reason: str) -> None:
        try:
            conn.sock.send((json.dumps({"event": "revoked", "reason": reason}) + "\n").encode())
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        if not conn.busy:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        if conn.lease is not None:
            self._by_lease.pop(conn.lease, None)
            if not self._keep:  # the store's copy too: else the holder would never see the end
                self._store.drop(lease_name(conn.lease))
        conn.sock.close()
        self._conns.discard(conn)
        self._count(conn.peer, -1)


def _error(err: MsixdError) -> bytes:
    return (json.dumps({"ok": False, "code": status_code(err).name, "error": str(err)}) + "\n").encode()
