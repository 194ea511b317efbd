"""Who is calling, and what they may do.

Unix socket peers are known by SO_PEERCRED (taken by the gateway when it
accepts), TCP peers by their verified client certificate. Readers: root,
members of the socket group or the admin group. Changers: root and members of
the admin group. TCP clients passed mutual TLS against the configured CA and
are trusted as orchestration tools: they may change.
"""

from __future__ import annotations

import grp
import threading
from dataclasses import dataclass

import grpc

from msixd.errors import MsixdError

READ_ONLY = frozenset({"GetStatus", "ListDevices", "GetDevice", "ListDomains", "Watch", "Echo"})


class PermissionDenied(MsixdError):
    def __init__(self, message: str, uid: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.uid = uid
        self.pid = pid


@dataclass(frozen=True)
class Peer:
    """uid/gid/pid/groups for a Unix peer; common_name for a TLS peer."""

    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    groups: frozenset[int] = frozenset()
    common_name: str = ""

    def describe(self) -> str:
        if self.common_name:
            return f"TLS client {self.common_name!r}"
        return f"uid {self.uid} (pid {self.pid})"


class PeerRegistry:
    """Loopback source port of each relayed connection -> the Unix peer behind it.

    The gateway registers the port before it connects, and removes it after the
    connection closed; a connection from an unregistered port is nobody's.
    """

    def __init__(self) -> None:
        self._peers: dict[int, Peer] = {}
        self._lock = threading.Lock()

    def add(self, port: int, peer: Peer) -> None:
        with self._lock:
            self._peers[port] = peer

    def remove(self, port: int) -> None:
        with self._lock:
            self._peers.pop(port, None)

    def get(self, port: int) -> Peer | None:
        with self._lock:
            return self._peers.get(port)


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class Access:
    def __init__(self, registry: PeerRegistry, socket_group: str, admin_group: str) -> None:
        self.registry = registry
        self.set_groups(socket_group, admin_group)

    def set_groups(self, socket_group: str, admin_group: str) -> None:
        self.socket_group, self.admin_group = socket_group, admin_group
        self._readers = {g for g in (_gid(socket_group), _gid(admin_group)) if g is not None}
        self._admins = {g for g in (_gid(admin_group),) if g is not None}

    def identify(self, context: grpc.ServicerContext) -> Peer:
        peer = context.peer()  # "ipv4:127.0.0.1:41234" for relayed Unix peers
        auth = context.auth_context()
        names = auth.get("x509_common_name") or auth.get("x509_subject_alternative_name")
        if names:
            return Peer(common_name=names[0].decode(errors="replace"))
        if peer.startswith("ipv4:127.0.0.1:"):
            known = self.registry.get(int(peer.rsplit(":", 1)[1]))
            if known is not None:
                return known
        raise PermissionDenied(f"unauthenticated connection from {peer}: use the Unix socket or mutual TLS")

    def check(self, peer: Peer, rpc: str, request: object) -> None:
        if peer.common_name or peer.uid == 0:
            return
        member = ({peer.gid} | peer.groups) if peer.gid is not None else set(peer.groups)
        read_only = rpc in READ_ONLY or (rpc == "Spread" and getattr(request, "dry_run", False))
        if read_only and member & self._readers:
            return
        if member & self._admins:
            return
        if read_only:
            raise PermissionDenied(
                f"{peer.describe()} may not read: only root and members of {self.socket_group} or "
                f"{self.admin_group} may",
                peer.uid, peer.pid,
            )
        raise PermissionDenied(
            f"{peer.describe()} may not change anything: only root and members of {self.admin_group} may",
            peer.uid, peer.pid,
        )
