"""Leasing MSI-X vectors from msixd, for programs: the eventfds of a device's vectors, over SCM_RIGHTS.

    from msixctl.lease import lease

    with lease("0000:00:09.0", vectors="0-1") as held:
        for fd, vector, irq in zip(held.eventfds, held.vectors, held.irqs):
            ...  # poll fd; os.eventfd_read(fd) gives the interrupts since the last read

The lease lasts as long as the `with` block (its connection to msixd): when
it ends, or the process exits, msixd takes the vectors back. A program run by
`msixctl lease BDF --vectors 0-3 -- PROGRAM` finds its lease with
`from_environment()`. The exchange itself is in docs/leases.md; this module
needs nothing of msixd but its socket.

Caveats of a shared eventfd (eventfd(2)): a read returns the counter and
resets it, so two readers take each other's counts; O_NONBLOCK is a property
of the open file, shared with msixd's copy (msixd's eventfds are non-blocking:
poll them, then read).
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

DEFAULT_LEASE_SOCKET = "/run/msixd/msixd-lease.sock"
SCM_MAX_FD = 253  # include/net/scm.h: descriptors per message
_FD_SIZE = array.array("i").itemsize


class LeaseError(Exception):
    """msixd refused the lease (code: PERMISSION_DENIED, FAILED_PRECONDITION, ...), or could not be reached."""

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Lease:
    """A lease held: its vectors, their Linux IRQs and eventfds (same order), and the device's VFIO file."""

    id: str
    bdf: str
    vectors: list[int]
    irqs: list[int]
    eventfds: list[int]
    device_fd: int | None = None
    connection: socket.socket | None = field(default=None, repr=False)

    def revoked(self, timeout: float = 0.0) -> str | None:
        """Why msixd ended the lease, once it has (None while it holds): waits up to `timeout` seconds."""
        if self.connection is None:
            return None
        ready, _, _ = select.select([self.connection], [], [], timeout)
        if not ready:
            return None
        data = self.connection.recv(4096)
        if not data:
            return "msixd closed the lease's connection"
        try:
            event = json.loads(data.split(b"\n")[0])
            return str(event.get("reason", "revoked"))
        except ValueError:
            return "revoked"

    def close(self) -> None:
        """End the lease: msixd takes the vectors back (or releases them, as asked)."""
        for fd in [*self.eventfds, *([self.device_fd] if self.device_fd is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.eventfds, self.device_fd = [], None
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def lease_socket(socket_path: str) -> str:
    """msixd's lease socket beside its readers' socket: msixd.sock -> msixd-lease.sock."""
    directory, name = os.path.split(socket_path)
    stem, dot, suffix = name.rpartition(".")
    return os.path.join(directory, f"{stem}-lease.{suffix}" if dot else f"{name}-lease")


def request_lease(bdf: str, vectors: str | list[int] | None = None, count: int | None = None, grow: bool = False,
                  device_fd: bool = False, on_return: str = "own", socket_path: str = DEFAULT_LEASE_SOCKET,
                  timeout: float = 60.0) -> Lease:
    """Ask msixd for a lease; the caller closes it (Lease.close). Raises LeaseError."""
    if (vectors is None) == (count is None):
        raise ValueError("name either vectors or count")
    body: dict[str, object] = {"bdf": bdf}
    body["vectors" if vectors is not None else "count"] = vectors if vectors is not None else count
    request = {"lease": body, "grow": grow, "device_fd": device_fd, "on_return": on_return}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except OSError as err:
        sock.close()
        raise LeaseError(f"cannot reach msixd at {socket_path}: {err.strerror}") from None
    try:
        sock.sendall((json.dumps(request) + "\n").encode())
    except OSError:
        pass  # msixd may have refused the connection already: its answer says why
    try:
        line, fds = _receive(sock)
    except OSError as err:
        sock.close()
        raise LeaseError(f"msixd at {socket_path} did not answer: {err.strerror or err}") from None
    except BaseException:
        sock.close()
        raise
    try:
        answer = json.loads(line)
        if not answer.get("ok"):
            raise LeaseError(str(answer.get("error", "refused")), str(answer.get("code", "UNKNOWN")))
        expected = int(answer["fds"])
        if len(fds) != expected:
            raise LeaseError(f"msixd sent {expected} descriptors, {len(fds)} arrived (is RLIMIT_NOFILE too low?)")
        entries = answer["vectors"]
        held = Lease(str(answer["lease"]), str(answer["bdf"]), [int(v["index"]) for v in entries],
                     [int(v["irq"]) for v in entries], fds[: len(entries)],
                     fds[len(entries)] if answer.get("device_fd") else None, sock)
    except BaseException:
        for fd in fds:
            os.close(fd)
        sock.close()
        raise
    sock.settimeout(None)
    return held


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One line, and every descriptor that came with it (the kernel stops a read at each message
    carrying descriptors, so a large lease arrives in several reads)."""
    data, fds = bytearray(), list[int]()
    while b"\n" not in data:
        if len(data) > 16 << 20:
            raise LeaseError("msixd's answer is too long")
        chunk, ancillary, flags, _ = sock.recvmsg(65536, socket.CMSG_SPACE(SCM_MAX_FD * _FD_SIZE))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
                fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise LeaseError("descriptors were lost on the way (is RLIMIT_NOFILE too low?)")
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise LeaseError("msixd closed the connection without answering")
        data += chunk
    return bytes(data[: data.index(b"\n")]), fds


@contextmanager
def lease(bdf: str, vectors: str | list[int] | None = None, count: int | None = None, grow: bool = False,
          device_fd: bool = False, on_return: str = "own", socket_path: str = DEFAULT_LEASE_SOCKET) -> Iterator[Lease]:
    """Hold a lease for the `with` block: vectors "0-3" (or count=N), their eventfds, optionally the device file."""
    held = request_lease(bdf, vectors, count, grow, device_fd, on_return, socket_path)
    try:
        yield held
    finally:
        held.close()


def from_environment() -> Lease | None:
    """The lease `msixctl lease ... -- PROGRAM` handed to this process, None if none was.

    As systemd's LISTEN_FDS: MSIXD_LEASE_PID must be this process (a child it forks does not
    take it by mistake), the eventfds start at descriptor 3.
    """
    if os.environ.get("MSIXD_LEASE_PID") != str(os.getpid()):
        return None
    count = int(os.environ["MSIXD_LEASE_FDS"])
    vectors = [int(v) for v in os.environ["MSIXD_LEASE_VECTORS"].split(",") if v]
    irqs = [int(v) for v in os.environ["MSIXD_LEASE_IRQS"].split(",") if v]
    device = os.environ.get("MSIXD_LEASE_DEVICE_FD", "")
    return Lease(os.environ.get("MSIXD_LEASE_ID", ""), os.environ.get("MSIXD_LEASE_BDF", ""), vectors, irqs,
                 list(range(3, 3 + count)), int(device) if device else None)
