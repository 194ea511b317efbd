"""Kernel uevents over netlink (NETLINK_KOBJECT_UEVENT): devices added, removed, bound, unbound.

The kernel broadcasts every uevent to multicast group 1 of NETLINK_KOBJECT_UEVENT
(lib/kobject_uevent.c, uevent_net_broadcast_untagged): one datagram of
"ACTION@DEVPATH" and a NUL, then "KEY=VALUE" strings, each ended by a NUL
(ACTION, DEVPATH, SUBSYSTEM, SEQNUM, and what the bus adds: PCI_SLOT_NAME for
PCI functions, DRIVER once one is bound, INTERFACE for a network device).
Driver binding has its own actions since Linux 4.14 ("bind", "unbind",
drivers/base/dd.c driver_bound() and __device_release_driver()).

udevd re-sends events to group 2 in its own format (a "libudev" header);
msixd listens to group 1 only, and keeps only datagrams whose sender is the
kernel (netlink port id 0): with CAP_NET_ADMIN a process could send to the
group too. Uevents reach only the initial network namespace: in a container
without the host's network namespace none arrive (msixd then relies on its
periodic passes).

When the socket's receive buffer overflows the kernel drops events and the
next recv fails with ENOBUFS: the reader reports that as a loss, so its user
can look at everything again instead of trusting what it missed.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
# The kernel's uevent buffer (UEVENT_BUFFER_SIZE, include/linux/kobject.h) is 2048 bytes, plus
# the "ACTION@DEVPATH" header: one datagram is never larger than this.
MAX_DATAGRAM = 8192
RECEIVE_BUFFER = 1 << 20


@dataclass(frozen=True)
class Uevent:
    action: str
    devpath: str
    subsystem: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pci_slot(self) -> str | None:
        """The PCI function's BDF for a PCI uevent ("PCI_SLOT_NAME=0000:00:04.0")."""
        return self.env.get("PCI_SLOT_NAME") if self.subsystem == "pci" else None


@dataclass(frozen=True)
class Lost:
    """The kernel dropped uevents (ENOBUFS): whatever they said is unknown."""


def parse(datagram: bytes) -> Uevent | None:
    """One kernel uevent datagram; None for anything else (a libudev message, garbage)."""
    parts = datagram.split(b"\0")
    header = parts[0].decode("utf-8", "replace")
    action, at, devpath = header.partition("@")
    if not at or not action or not devpath.startswith("/"):
        return None
    env = {}
    for part in parts[1:]:
        key, equals, value = part.decode("utf-8", "replace").partition("=")
        if equals and key:
            env[key] = value
    return Uevent(env.get("ACTION", action), env.get("DEVPATH", devpath), env.get("SUBSYSTEM", ""), env)


class UeventSocket:
    """A bound netlink socket receiving the kernel's uevents."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
        try:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass  # the default buffer still works; an overflow is then reported as Lost
            self._sock.bind((0, KERNEL_GROUP))
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self, timeout: float | None) -> Uevent | Lost | None:
        """The next kernel uevent, Lost after an overflow, or None when timeout passed (or a
        datagram was not the kernel's)."""
        self._sock.settimeout(timeout)
        try:
            data, (sender, _groups) = self._sock.recvfrom(MAX_DATAGRAM)
        except TimeoutError:
            return None
        except OSError as err:
            if err.errno == errno.ENOBUFS:
                return Lost()
            raise
        if sender != 0:
            return None
        return parse(data)

    def close(self) -> None:
        self._sock.close()
