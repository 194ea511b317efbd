"""sd_notify(3) and sd_listen_fds(3) without libsystemd: datagrams to $NOTIFY_SOCKET, descriptors from 3.

A no-op when msixd does not run under systemd (NOTIFY_SOCKET unset).

The file descriptor store (systemd.service(5) FileDescriptorStoreMax=,
sd_pid_notify_with_fds(3)): a datagram "FDSTORE=1\nFDNAME=<name>" carrying
descriptors as SCM_RIGHTS stores them; FDNAME names every descriptor of its
message, so msixd sends one message per descriptor. "FDPOLL=0" (systemd 246+)
keeps systemd from polling one for POLLHUP/POLLERR and dropping it:
VFIO files do not poll at all. "FDSTOREREMOVE=1\nFDNAME=<name>" closes every
stored descriptor of that name. At the next start systemd passes them back
from descriptor 3 (SD_LISTEN_FDS_START) with LISTEN_FDS, LISTEN_PID and
LISTEN_FDNAMES (colon-separated names). A name is at most 255 printable
ASCII characters without ':' (systemd's fdname_is_valid()).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket

LISTEN_FDS_START = 3
FDNAME_MAX = 255


def _address() -> str:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    return address


def notify(state: str) -> bool:
    """Send e.g. "READY=1"; return whether there was a socket to send it to."""
    return notify_fds(state, [])


def notify_fds(state: str, fds: list[int]) -> bool:
    """Send state with fds attached (SCM_RIGHTS); return whether there was a socket to send it to."""
    address = _address()
    if not address:
        return False
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendmsg([state.encode()], ancillary)
    return True


def valid_fdname(name: str) -> bool:
    """systemd's fdname_is_valid(): 1 to 255 printable ASCII characters, no ':'."""
    return 0 < len(name) <= FDNAME_MAX and all(" " <= c <= "~" and c != ":" for c in name)


def store_max() -> int:
    """How many descriptors systemd keeps for msixd: $FDSTORE (set by systemd 254+ to
    FileDescriptorStoreMax=), else $MSIXD_FDSTORE (msixd's unit sets it, for older systemd);
    0 without systemd's notify socket."""
    if not _address():
        return 0
    for variable in ("FDSTORE", "MSIXD_FDSTORE"):
        value = os.environ.get(variable, "")
        if value.isdigit() and len(value) <= 9:
            return int(value)
    return 0


def listen_fds(unset: bool = True) -> list[tuple[str, int]]:
    """(name, fd) of every descriptor systemd passed to this process; [] when none were passed.

    The descriptors are made close-on-exec; the variables are unset (with unset), so that no
    child process takes them for its own (sd_listen_fds(3)).
    """
    try:
        pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
        if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit() or len(count) > 9:
            return []
        names = os.environ.get("LISTEN_FDNAMES", "").split(":")
        passed = []
        for position in range(int(count)):
            fd = LISTEN_FDS_START + position
            try:
                flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            except OSError:
                continue  # not open after all
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
            passed.append((names[position] if position < len(names) else "unknown", fd))
        return passed
    finally:
        if unset:
            for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"):
                os.environ.pop(variable, None)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
