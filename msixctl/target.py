"""Where msixd is, as the global options name it: its Unix socket, or host:port over mutual TLS."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from msixctl.errors import EXIT_UNREACHABLE, EXIT_USAGE, BadUsage, ClientError


@dataclass(frozen=True)
class Tls:
    ca: str
    cert: str
    key: str

    def files(self) -> tuple[bytes, bytes, bytes]:
        """The CA certificate, the client key and the client certificate."""

        def read(path: str, what: str) -> bytes:
            try:
                with open(path, "rb") as stream:
                    return stream.read()
            except OSError as err:
                raise ClientError(f"cannot read the {what} {path}: {err.strerror}", EXIT_USAGE) from None

        return read(self.ca, "CA certificate"), read(self.key, "client key"), read(self.cert, "client certificate")


def admin_socket(path: str) -> str:
    """msixd's socket for root and admins beside its readers' one: msixd.sock -> msixd-admin.sock.

    Each has its own listen queue: a reader flooding msixd.sock cannot keep an admin out.
    """
    directory, name = os.path.split(path)
    stem, dot, suffix = name.rpartition(".")
    return os.path.join(directory, f"{stem}-admin.{suffix}" if dot else f"{name}-admin")


@dataclass(frozen=True)
class Target:
    """Where msixd is: its Unix socket (the admins' one when this user may open it), or
    host:port over mutual TLS."""

    socket: str
    timeout: float
    tcp: str = ""
    tls: Tls | None = None

    @property
    def address(self) -> str:
        if self.tcp:
            return self.tcp
        admin = admin_socket(self.socket)
        chosen = admin if os.access(admin, os.R_OK | os.W_OK) else self.socket
        return f"unix:{os.path.abspath(chosen)}"

    def unreachable(self, reason: str) -> ClientError:
        return ClientError(
            f"cannot reach msixd at {self.address}: {reason} (is it running? systemctl start msixd)",
            EXIT_UNREACHABLE,
        )

    def check_socket(self) -> None:
        """Say precisely why a Unix socket cannot be used, before gRPC's generic UNAVAILABLE."""
        try:
            mode = os.stat(self.socket).st_mode
        except FileNotFoundError:
            raise self.unreachable("the socket does not exist") from None
        except PermissionError:
            raise self.unreachable("permission denied on its directory (run as root or in the msixd group)") from None
        if not stat.S_ISSOCK(mode):
            raise self.unreachable("the path is not a socket")
        if not os.access(self.socket, os.R_OK | os.W_OK):
            raise self.unreachable("permission denied (run as root or in the msixd group)")


def make_target(socket: str, timeout: float, tcp: str = "", ca: str = "", cert: str = "", key: str = "") -> Target:
    """The Target the global options name. BadUsage: --target without all three TLS files."""
    tls = Tls(ca, cert, key) if ca and cert and key else None
    if tcp and tls is None:
        raise BadUsage("--target needs --ca, --cert and --key (msixd's TCP listener is mutual TLS only)")
    return Target(socket, timeout, tcp, tls)
