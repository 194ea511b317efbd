"""Who is calling, and what they may do: decided once, from the connection, in one place.

A Unix peer is known by the credentials the kernel recorded when it
connected (msixd/kernel/peercred.py: uid, gid, supplementary groups), taken
by the gateway at accept time and registered under the unguessable address
it gives the relayed connection. A TLS peer is known by the names in the
client certificate that passed mutual TLS. Nothing a caller sends, and
nothing it can change after connecting, enters the decision.

Roles: root and members of the admin group are admins; members of the socket
group are readers. A TLS client is an admin or a reader only when the
configuration names its certificate (tls_admins, tls_readers); any other
certificate, even one the CA signed, may do nothing. Readers may call the
read-only RPCs, health checking and reflection; admins everything.
"""

from __future__ import annotations

import enum
import grp
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import grpc

from msixd.errors import MsixdError

SERVICE = "msix.v1.MsixService"
READ_ONLY_RPCS = frozenset({"GetStatus", "ListDevices", "GetDevice", "ListDomains", "Watch", "Echo", "ListLeases",
                            "GetPolicy", "DiffPolicy"})
# Changes that only plan when asked to: read-only then.
DRY_RUNNABLE_RPCS = frozenset({"Spread", "SetAffinity", "ApplyPolicy"})
READ_ONLY_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                                "grpc.reflection.v1.ServerReflection"})
_ABSTRACT = "unix-abstract:"


class PermissionDenied(MsixdError):
    def __init__(self, message: str, peer: Peer | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class Role(enum.IntEnum):
    NONE = 0
    READER = 1
    ADMIN = 2


@dataclass(frozen=True)
class Peer:
    """A Unix peer (uid, gid, pid, groups) or a TLS peer (the names of its certificate)."""

    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    groups: frozenset[int] = frozenset()
    tls_names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """What per-caller limits count by: the uid, or the certificate's first name."""
        return f"tls:{self.tls_names[0]}" if self.tls_names else f"uid:{self.uid}"

    @property
    def is_root(self) -> bool:
        return not self.tls_names and self.uid == 0

    def describe(self) -> str:
        if self.tls_names:
            return f"TLS client {self.tls_names[0]!r}"
        return f"uid {self.uid} (pid {self.pid})"


class PeerRegistry:
    """Address of each relayed connection -> the Unix peer behind it.

    The gateway registers the address before it connects and removes it when
    the connection closes. Addresses are random and never reused, so a request
    still queued from a closed connection finds nobody, never someone else.
    """

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()

    def add(self, name: str, peer: Peer) -> None:
        with self._lock:
            self._peers[name] = peer

    def remove(self, name: str) -> None:
        with self._lock:
            self._peers.pop(name, None)

    def get(self, name: str) -> Peer | None:
        with self._lock:
            return self._peers.get(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._peers)


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def split_method(method: str) -> tuple[str, str]:
    """'/msix.v1.MsixService/GetStatus' -> ('msix.v1.MsixService', 'GetStatus')."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class Access:
    def __init__(self, registry: PeerRegistry, socket_group: str, admin_group: str,
                 tls_admins: Iterable[str] = (), tls_readers: Iterable[str] = ()) -> None:
        self.registry = registry
        self.set_policy(socket_group, admin_group, tls_admins, tls_readers)

    def set_policy(self, socket_group: str, admin_group: str, tls_admins: Iterable[str] = (),
                   tls_readers: Iterable[str] = ()) -> None:
        """Applied to every request from now on (a reload)."""
        self.socket_group, self.admin_group = socket_group, admin_group
        self._readers = frozenset(g for g in (_gid(socket_group), _gid(admin_group)) if g is not None)
        self._admins = frozenset(g for g in (_gid(admin_group),) if g is not None)
        self._tls_admins = frozenset(tls_admins)
        self._tls_readers = frozenset(tls_readers) | self._tls_admins

    def role(self, peer: Peer) -> Role:
        if peer.tls_names:
            if self._tls_admins.intersection(peer.tls_names):
                return Role.ADMIN
            return Role.READER if self._tls_readers.intersection(peer.tls_names) else Role.NONE
        if peer.uid == 0:
            return Role.ADMIN
        member = peer.groups | ({peer.gid} if peer.gid is not None else set())
        if member & self._admins:
            return Role.ADMIN
        return Role.READER if member & self._readers else Role.NONE

    def identify(self, context: grpc.ServicerContext) -> Peer:
        # A list of values per property: grpc's cygrpc builds lists (grpc/_server.py annotates
        # Mapping[str, Sequence[bytes]]); the typeshed stub says bytes.
        auth = cast("Mapping[str, list[bytes]]", context.auth_context())
        if auth.get("transport_security_type") == [b"ssl"]:
            names = [n.decode(errors="replace") for n in
                     auth.get("x509_common_name", []) + auth.get("x509_subject_alternative_name", [])]
            if names:
                return Peer(tls_names=tuple(dict.fromkeys(names)))
        address = context.peer()
        if address.startswith(_ABSTRACT):
            known = self.registry.get(address[len(_ABSTRACT):])
            if known is not None:
                return known
        raise PermissionDenied("unidentified connection: connect through msixd's Unix socket or mutual TLS")

    def check(self, peer: Peer, method: str, request: object = None) -> None:
        """Raise PermissionDenied unless peer may call method (full gRPC method name)."""
        service, name = split_method(method)
        if service == SERVICE:
            dry_run = name in DRY_RUNNABLE_RPCS and bool(getattr(request, "dry_run", False))
            read_only = name in READ_ONLY_RPCS or dry_run
        else:
            read_only = service in READ_ONLY_SERVICES
        role = self.role(peer)
        if role is Role.ADMIN or (read_only and role is Role.READER):
            return
        if peer.tls_names:
            kind = "read" if read_only else "change anything"
            raise PermissionDenied(
                f"{peer.describe()} may not {kind}: msixd's configuration names no such certificate in "
                f"{'tls_readers or tls_admins' if read_only else 'tls_admins'}", peer)
        if read_only:
            raise PermissionDenied(
                f"{peer.describe()} may not read: only root and members of {self.socket_group} or "
                f"{self.admin_group} may", peer)
        raise PermissionDenied(
            f"{peer.describe()} may not change anything: only root and members of {self.admin_group} may", peer)
