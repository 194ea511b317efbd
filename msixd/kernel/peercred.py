"""Who is at the other end of a Unix socket, as the kernel recorded it when the peer connected.

SO_PEERCRED gives the pid, uid and gid, and SO_PEERGROUPS (Linux 4.13+) the
supplementary groups, both captured by the kernel at connect() time
(net/unix/af_unix.c, copy_peercred()). Nothing the peer does afterwards
changes them: not exiting, not handing the socket to another process, not
another process landing on its pid. That is why identity comes from here and
never from /proc/<pid>: the pid is only for the log.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # asm-generic/socket.h; Python 3.11 lacks the name
_GID_SIZE = 4
NGROUPS_MAX = 65536  # include/uapi/linux/limits.h


@dataclass(frozen=True)
class Credentials:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


def peer_credentials(sock: socket.socket) -> Credentials:
    """The peer's credentials; OSError if the socket is not a connected Unix socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Credentials(pid, uid, gid, peer_groups(sock))


def peer_credentials_of(fd: int) -> Credentials:
    """peer_credentials() of a socket known by its descriptor, which stays open and unchanged."""
    sock = socket.socket(fileno=fd)
    try:
        return peer_credentials(sock)
    finally:
        sock.detach()


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """Supplementary groups of the peer at connect time (SO_PEERGROUPS).

    The kernel answers ERANGE when the buffer is too small; start with room for
    64 groups and grow to the kernel's maximum.
    """
    size = 64 * _GID_SIZE
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as err:
            if err.errno == errno.ERANGE and size < NGROUPS_MAX * _GID_SIZE:
                size = min(size * 8, NGROUPS_MAX * _GID_SIZE)
                continue
            raise
        count = len(raw) // _GID_SIZE
        return frozenset(struct.unpack(f"{count}I", raw[: count * _GID_SIZE]))
