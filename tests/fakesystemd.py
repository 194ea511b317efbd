"""A stand-in for systemd's file descriptor store, for tests on the host and in the plain guests.

It is a datagram socket like systemd's notify socket: it keeps the
descriptors of FDSTORE=1 messages under their FDNAME (one message may carry
several, all of that name), closes those of an FDSTOREREMOVE=1 message's
FDNAME, and records every other assignment (READY=1, STOPPING=1, ...). Like
systemd, it starts the next process with the store passed from descriptor 3
on and LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set (sd_listen_fds(3)), the
pid being the process's own: the launcher is `sh -c 'LISTEN_PID=$$ exec ...'`.
`flush()` is `systemctl stop`: the store is closed. For msixd in the test
process, `handback()` gives copies of the stored descriptors as (name, fd).

What it does not model: systemd's NotifyAccess= check of the sender and its
FileDescriptorStoreMax= refusal beyond `max_fds` are kept simple (the extra
descriptors are closed), and FDPOLL is recorded, not acted on.
"""

from __future__ import annotations

import array
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

SCM_MAX_FD = 253


class FakeSystemd:
    def __init__(self, directory: Path, max_fds: int = 4096) -> None:
        self.path = directory / "notify"
        self.max_fds = max_fds
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o777)
        self.store: list[tuple[str, int]] = []
        self.messages: list[dict[str, str]] = []
        self.refused: list[str] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._receive, name="fake-systemd", daemon=True)
        self._thread.start()

    # Receiving

    def _receive(self) -> None:
        space = socket.CMSG_SPACE(SCM_MAX_FD * array.array("i").itemsize)
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65536, space)
            except OSError:
                return
            if self._closing:
                return
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._changed:
                self._apply(fields, list(fds))
                self._changed.notify_all()

    def _apply(self, fields: dict[str, str], fds: list[int]) -> None:
        self.messages.append(fields)
        name = fields.get("FDNAME", "stored")
        if fields.get("FDSTOREREMOVE") == "1":
            for stored, fd in [entry for entry in self.store if entry[0] == name]:
                os.close(fd)
                self.store.remove((stored, fd))
        if fields.get("FDSTORE") == "1":
            for fd in fds:
                if len(self.store) >= self.max_fds:
                    self.refused.append(name)
                    os.close(fd)
                else:
                    self.store.append((name, fd))
            return
        for fd in fds:  # descriptors without FDSTORE=1 are not kept (systemd closes them)
            os.close(fd)

    # Looking

    def names(self) -> list[str]:
        with self._changed:
            return [name for name, _ in self.store]

    def wait_for(self, predicate: Callable[[FakeSystemd], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake systemd: not within {timeout:g} s: {what} (store: {self.names()})")
                self._changed.wait(left)

    def saw(self, key: str, value: str = "1") -> bool:
        with self._changed:
            return any(message.get(key) == value for message in self.messages)

    def env(self) -> dict[str, str]:
        """What systemd puts in a service's environment for the store (254+: FDSTORE)."""
        return {"NOTIFY_SOCKET": str(self.path), "FDSTORE": str(self.max_fds)}

    # Handing back

    def handback(self) -> list[tuple[str, int]]:
        """Copies of the stored descriptors, for a daemon in this process."""
        with self._changed:
            return [(name, os.dup(fd)) for name, fd in self.store]

    def spawn(
        self, argv: list[str], env: dict[str, str], stdout: int, cwd: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start argv as systemd would: the store from descriptor 3, LISTEN_* in its environment."""
        with self._changed:
            stored = list(self.store)
        passed = [fcntl_dupfd(fd, 3 + len(stored) + 16) for _, fd in stored]
        names = ":".join(name for name, _ in stored)
        script = 'LISTEN_PID=$$ exec "$@"' if stored else 'exec "$@"'
        full = {**env, **self.env(), **({"LISTEN_FDS": str(len(stored)), "LISTEN_FDNAMES": names} if stored else {})}

        def place() -> None:  # in the child, before exec: the store at 3..
            for position, fd in enumerate(passed):
                os.dup2(fd, 3 + position)

        try:
            return subprocess.Popen(["/bin/sh", "-c", script, "sh", *argv], env=full, stdout=stdout,
                                    stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=place,
                                    pass_fds=range(3, 3 + len(stored)))
        finally:
            for fd in passed:
                os.close(fd)

    def flush(self) -> None:
        """systemctl stop: every stored descriptor is closed."""
        with self._changed:
            for _, fd in self.store:
                os.close(fd)
            self.store.clear()
            self._changed.notify_all()

    def close(self) -> None:
        self._closing = True
        self.flush()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)


def fcntl_dupfd(fd: int, lowest: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
