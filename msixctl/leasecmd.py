"""msixctl lease: run a program with leased vectors, as systemd runs a socket-activated one.

The program inherits the lease's eventfds from descriptor 3 on, in vector
order, then the device's VFIO file if the lease carries it, and finds them
described in its environment (msixctl.lease.from_environment reads it):

    MSIXD_LEASE_FDS        how many eventfds (3 .. 3+N-1)
    MSIXD_LEASE_VECTORS    their MSI-X indexes, comma-separated, in the same order
    MSIXD_LEASE_IRQS       their Linux IRQs, likewise
    MSIXD_LEASE_DEVICE_FD  the descriptor of the device's VFIO file, when granted
    MSIXD_LEASE_PID        the program's pid (a child it forks does not take the lease for its own)
    MSIXD_LEASE_ID, MSIXD_LEASE_BDF

msixctl keeps the lease's connection to msixd (the program does not inherit
it) and ends the lease when the program exits; it exits with the program's
status (128 + the signal's number when a signal ended it).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys

from msixctl.lease import Lease

FIRST_FD = 3


def environment(held: Lease, pid: int) -> dict[str, str]:
    env = {
        "MSIXD_LEASE_FDS": str(len(held.eventfds)),
        "MSIXD_LEASE_VECTORS": ",".join(map(str, held.vectors)),
        "MSIXD_LEASE_IRQS": ",".join(map(str, held.irqs)),
        "MSIXD_LEASE_PID": str(pid),
        "MSIXD_LEASE_ID": held.id,
        "MSIXD_LEASE_BDF": held.bdf,
    }
    if held.device_fd is not None:
        env["MSIXD_LEASE_DEVICE_FD"] = str(FIRST_FD + len(held.eventfds))
    return env


def _exec_child(held: Lease, command: list[str]) -> None:
    """In the forked child: the lease's descriptors at 3.., the environment, then exec (never returns)."""
    try:
        passed = [*held.eventfds, *([held.device_fd] if held.device_fd is not None else [])]
        # Out of the way first: a descriptor already at 3.. must not be overwritten before it is moved.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, FIRST_FD + len(passed)) for fd in passed]
        for position, fd in enumerate(high):
            os.dup2(fd, FIRST_FD + position)  # dup2 clears close-on-exec: the program inherits it
            os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.execvpe(command[0], command, {**os.environ, **environment(held, os.getpid())})
    except OSError as err:
        print(f"msixctl: cannot run {command[0]}: {err.strerror}", file=sys.stderr)
    os._exit(127)


def run(held: Lease, command: list[str]) -> int:
    """Run command with the lease; return its exit status. Tells on stderr if msixd revokes the lease."""
    pid = os.fork()
    if pid == 0:
        _exec_child(held, command)
    forwarded = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda number, _frame: os.kill(pid, number)) for sig in forwarded}
    try:
        child = os.pidfd_open(pid)
        watching = [child] + ([held.connection] if held.connection is not None else [])
        try:
            while True:
                ready, _, _ = select.select(watching, [], [])
                if child in ready:
                    break
                reason = held.revoked()
                if reason is not None:
                    print(f"msixctl: msixd ended the lease {held.id}: {reason}", file=sys.stderr)
                    watching = [child]
        finally:
            os.close(child)
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
