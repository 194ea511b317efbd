"""irqbalance's control socket: find the daemon, read its settings, ban IRQs from it.

Everything here follows irqbalance's own sources (github.com/Irqbalance/irqbalance):

- The daemon listens on /run/irqbalance/irqbalance<pid>.sock (irqbalance.c
  init_socket(), SOCKET_TMPFS "/run/irqbalance" and SOCKET_PATH "irqbalance"
  in irqbalance.h); when it cannot bind that file it binds the abstract address
  whose name is all zero bytes instead. Builds without its ncurses UI
  (HAVE_IRQBALANCEUI unset) have no socket at all.
- Its pid is found as irqbalance-ui finds it (ui/irqbalance-ui.c main()): the
  first process whose command line names "irqbalance" and not "irqbalance-ui".
- One command per connection. The daemon accepts, reads one message with
  recvmsg() and acts only when the message carries SCM_CREDENTIALS with uid 0
  (irqbalance.c sock_handle()); otherwise it closes the connection without a
  word. The client sends its credentials explicitly, as irqbalance-ui's
  create_credentials_msg() does.
- "settings ban irqs <n> <n> ..." replaces the whole list of IRQs banned on its
  command line (--banirq) or through the socket, in memory only ("NONE"
  empties it); the daemon rescans at its next pass and leaves banned IRQs
  alone. The numbers are read with strtoul() until one reads as 0, so extra
  spaces between them are harmless.
- "setup" answers "SLEEP <s> " then "IRQ <n> LOAD <l> DIFF <d> CLASS <c> " for
  each banned IRQ, then "BANNED <cpumask>", and closes.
- Messages are read into a fixed buffer: 500 bytes before irqbalance 1.9.4 (a
  longer message is cut at 500), 16384 since (a message that fills it is
  refused). A ban list longer than a buffer is padded with spaces so that no
  number straddles byte 500, and never sent longer than 16383 bytes: an old
  daemon then bans a prefix of the list, which reading "setup" back shows.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from msixd.errors import MsixdError
from msixd.kernel.cpulist import parse_cpumask
from msixd.kernel.files import list_dir, read_bytes, read_text
from msixd.kernel.roots import KernelRoots

SOCKET_DIR = "irqbalance"  # under the run directory (SOCKET_TMPFS)
ABSTRACT_ADDRESS = b"\0" * 108  # bind() with an all-zero sun_path of sizeof(struct sockaddr_un)
BAN_PREFIX = "settings ban irqs "
OLD_BUFFER = 500  # irqbalance before 1.9.4 (char buff[500])
BUFFER = 16384  # irqbalance 1.9.4 and later refuse a message that fills this
MAX_REPLY = 4 << 20
_UCRED = struct.Struct("3i")
_SETUP_IRQ = re.compile(r"IRQ (\d{1,10}) LOAD \d+ DIFF \d+ CLASS -?\d+")


class IrqbalanceError(MsixdError):
    """Talking to irqbalance failed; the reason says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Instance:
    """One running irqbalance: its pid and when it started (a pid can be reused)."""

    pid: int
    start_time: int  # /proc/<pid>/stat field 22, in clock ticks since boot


@dataclass(frozen=True)
class Setup:
    """What "setup" answers: the interval between passes, the banned IRQs and CPUs."""

    sleep: int
    banned_irqs: frozenset[int]
    banned_cpus: frozenset[int]


def _argv0(roots: KernelRoots, pid: str) -> str:
    data = read_bytes(f"{roots.procfs}/{pid}/cmdline") or b""
    return data.split(b"\0", 1)[0][:254].decode("utf-8", "replace")


def start_time(roots: KernelRoots, pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat; None when the process is gone."""
    text = read_text(f"{roots.procfs}/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # comm may hold spaces and parentheses
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def find(roots: KernelRoots) -> list[Instance]:
    """Every process irqbalance-ui would take for irqbalance, lowest pid first."""
    found = []
    for name in list_dir(str(roots.procfs)):
        if not name.isdigit():
            continue
        argv0 = _argv0(roots, name)
        if "irqbalance" in argv0 and "irqbalance-ui" not in argv0:
            started = start_time(roots, int(name))
            if started is not None:
                found.append(Instance(int(name), started))
    return sorted(found, key=lambda instance: instance.pid)


_SOCKET_NAME = re.compile(r"irqbalance(\d{1,10})\.sock")


def with_socket(roots: KernelRoots) -> list[Instance]:
    """The irqbalance processes whose control socket is in the socket directory (the pid is in
    its name), lowest pid first: one directory listing, where find() reads all of /proc."""
    found = []
    for name in list_dir(str(roots.run / SOCKET_DIR)):
        match = _SOCKET_NAME.fullmatch(name)
        if match is None:
            continue
        argv0 = _argv0(roots, match.group(1))
        started = start_time(roots, int(match.group(1)))
        if started is not None and "irqbalance" in argv0 and "irqbalance-ui" not in argv0:
            found.append(Instance(int(match.group(1)), started))
    return sorted(found, key=lambda instance: instance.pid)


def alive(roots: KernelRoots, instance: Instance) -> bool:
    return start_time(roots, instance.pid) == instance.start_time


def socket_path(roots: KernelRoots, pid: int) -> Path:
    return roots.run / SOCKET_DIR / f"irqbalance{pid}.sock"


def _abstract_listening(roots: KernelRoots) -> bool:
    """Whether a socket listens on the all-zero abstract address, from /proc/net/unix (the
    kernel prints an abstract name with "@" for every zero byte; flags 00010000 is listening)."""
    for line in (read_text(f"{roots.procfs}/net/unix") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == "@" * 108 and fields[3] == "00010000":
            return True
    return False


def address(roots: KernelRoots, pid: int, abstract_fallback: bool) -> str | bytes | None:
    """Where irqbalance <pid> listens: its socket file, else (when allowed) the abstract address
    it falls back to; None when there is neither. Nothing is connected to: irqbalance logs a
    warning for every connection that sends it nothing."""
    path = socket_path(roots, pid)
    if path.exists():
        return str(path)
    if abstract_fallback and _abstract_listening(roots):
        return ABSTRACT_ADDRESS
    return None


def _exchange(where: str | bytes, command: bytes, timeout: float) -> bytes:
    """Send one command with root's credentials and read until irqbalance closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(where)
            credentials = _UCRED.pack(os.getpid(), os.geteuid(), os.getegid())
            sock.sendmsg([command], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)])
            chunks, size = [], 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY:
                    raise IrqbalanceError(f"irqbalance answered more than {MAX_REPLY} bytes")
        except TimeoutError:
            raise IrqbalanceError(f"irqbalance did not answer within {timeout:g} s") from None
        except ConnectionResetError:
            chunks = []  # closed without reading everything: it refused the message
        except OSError as err:
            raise IrqbalanceError(f"irqbalance's socket: {os.strerror(err.errno or 0)}") from err
    return b"".join(chunks)


def parse_setup(text: str) -> Setup:
    """The answer to "setup" (irqbalance.c sock_handle(), the "setup" branch)."""
    match = re.fullmatch(r"SLEEP (\d{1,10}) ((?:IRQ \d+ LOAD \d+ DIFF \d+ CLASS -?\d+ )*)BANNED ([0-9a-fA-F,]*)\s*",
                         text)
    if match is None:
        raise IrqbalanceError(f"irqbalance's setup answer is not in the expected format: {text[:120]!r}")
    irqs = frozenset(int(found.group(1)) for found in _SETUP_IRQ.finditer(match.group(2)))
    cpus = parse_cpumask(match.group(3)) if match.group(3) else frozenset()
    return Setup(int(match.group(1)), irqs, cpus)


def setup(where: str | bytes, timeout: float) -> Setup:
    answer = _exchange(where, b"setup", timeout)
    if not answer:
        raise IrqbalanceError("irqbalance closed the connection without an answer: it takes commands only "
                              "from root (SCM_CREDENTIALS with uid 0)")
    return parse_setup(answer.decode("ascii", "replace"))


def ban_command(irqs: Iterable[int]) -> tuple[bytes, frozenset[int]]:
    """The "settings ban irqs" message for irqs, and the IRQs it carries (all of them unless the
    list is longer than irqbalance reads).

    Items are laid out so that no number straddles byte OLD_BUFFER (an old daemon reads a prefix
    of whole numbers), and the message stays shorter than BUFFER.
    """
    ordered = sorted(set(irqs))
    if not ordered:
        return (BAN_PREFIX + "NONE").encode(), frozenset()
    if any(irq <= 0 for irq in ordered):  # strtoul() reading 0 ends the list
        raise ValueError("IRQ 0 cannot be banned through irqbalance's socket")
    text = BAN_PREFIX
    carried = []
    for irq in ordered:
        item = f"{irq} "
        if len(text) < OLD_BUFFER < len(text) + len(item):  # would straddle the old buffer's end
            text += " " * (OLD_BUFFER - len(text))
        if len(text) + len(item) >= BUFFER:
            break
        text += item
        carried.append(irq)
    return text.encode(), frozenset(carried)


def ban(where: str | bytes, irqs: Iterable[int], timeout: float) -> frozenset[int]:
    """Replace irqbalance's list of banned IRQs; returns those the message carried. irqbalance
    answers nothing: reading setup() back tells what it kept."""
    command, carried = ban_command(irqs)
    _exchange(where, command, timeout)
    return carried
