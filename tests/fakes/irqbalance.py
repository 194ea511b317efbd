"""A stand-in for irqbalance's control socket, for fast tests (the real one runs in bench guests).

It does what irqbalance.c sock_handle() does, line for line where it matters:
one recvmsg() per connection into a fixed buffer (500 bytes before 1.9.4,
16384 since, where a message that fills it is refused), SO_PASSCRED on the
listening socket, no answer and a closed connection unless the message came
with SCM_CREDENTIALS of uid 0, "settings ban irqs" read with strtoul() until
a 0, replacing the whole list ("NONE" empties it), and "setup" answered as
"SLEEP <s> " + "IRQ <n> LOAD <l> DIFF <d> CLASS <c> " per banned IRQ +
"BANNED <cpumask>".
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

_UCRED = struct.Struct("3i")


def format_cpumask(cpus: frozenset[int], nr_cpu_ids: int) -> str:
    """%*pb over nr_cpu_ids bits, as irqbalance prints its banned CPUs: "3" for {0,1} of 2, "ff,ffffffff" for 40."""
    value = sum(1 << cpu for cpu in cpus)
    digits = f"{value:0{(nr_cpu_ids + 3) // 4}x}"
    head = len(digits) % 8 or 8
    return ",".join([digits[:head]] + [digits[i : i + 8] for i in range(head, len(digits), 8)])


def strtoul(text: str, start: int) -> tuple[int, int]:
    """C's strtoul(text + start, &end, 10): (value, end); (0, start) when no digits follow."""
    i = start
    while i < len(text) and text[i] in " \t\n\v\f\r":
        i += 1
    if i < len(text) and text[i] in "+-":
        i += 1
    digits = i
    while i < len(text) and text[i].isdigit():
        i += 1
    if i == digits:
        return 0, start
    return int(text[digits:i]), i


class FakeIrqbalance:
    def __init__(self, address: str | bytes, old: bool = False, root_uid: int = 0, sleep: int = 10,
                 banned_cpus: frozenset[int] = frozenset()) -> None:
        self.buffer = 500 if old else 16384
        self.old = old
        self.root_uid = root_uid
        self.sleep = sleep
        self.banned_cpus = banned_cpus
        self.banned: list[int] = []
        self.commands: list[bytes] = []
        self.refused = 0
        self.address = address
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(address)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._listener.listen(1)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        if isinstance(self.address, str):
            Path(self.address).unlink(missing_ok=True)

    def _serve(self) -> None:
        while not self._stop:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                self._handle(connection)

    def _handle(self, connection: socket.socket) -> None:
        data, ancillary, _flags, _address = connection.recvmsg(self.buffer, socket.CMSG_SPACE(_UCRED.size))
        if not self.old and len(data) == self.buffer:
            return  # "Received command too long."
        if not ancillary:
            return  # "Connection no memory."
        level, kind, payload = ancillary[0]
        valid = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and \
            _UCRED.unpack(payload[: _UCRED.size])[1] == self.root_uid
        if not valid:
            self.refused += 1
            return  # "Permission denied for user to connect to socket."
        self.commands.append(data)
        text = data.decode("ascii", "replace")
        if text.startswith("settings ban irqs "):
            rest = text[len("settings ban irqs "):]
            self.banned = []
            if rest.startswith("NONE"):
                return
            irq, end = strtoul(rest, 0)
            while True:
                self.banned.append(irq)
                irq, end = strtoul(rest, end)
                if irq == 0:
                    break
        elif text.startswith("setup"):
            answer = f"SLEEP {self.sleep} " + "".join(f"IRQ {irq} LOAD 0 DIFF 0 CLASS 4 " for irq in self.banned)
            answer += f"BANNED {format_cpumask(self.banned_cpus, max(self.banned_cpus, default=1) + 1)}"
            connection.sendall(answer.encode())


def socket_dir(run: Path) -> Path:
    path = run / "irqbalance"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fake_process(procfs: Path, pid: int, argv0: str = "/usr/sbin/irqbalance", start_time: int = 4242) -> None:
    """/proc/<pid>/cmdline and stat of a process irqbalance-ui would take for irqbalance."""
    directory = procfs / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cmdline").write_bytes(argv0.encode() + b"\0--foreground\0")
    fields = ["S", "1"] + ["0"] * 17 + [str(start_time)] + ["0"] * 30
    (directory / "stat").write_text(f"{pid} ({os.path.basename(argv0)[:15]}) {' '.join(fields)}\n")
