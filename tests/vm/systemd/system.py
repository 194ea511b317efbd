"""Inside the systemd guest: run commands as real users, and read the truth from the kernel.

Standard library only: the guest's pytest is Debian's, on the system Python;
msixd and msixctl are reached only as a user reaches them, through systemctl,
journalctl and the installed msixctl.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.vm import guest

MSIXCTL = "/usr/local/bin/msixctl"
UNIT = "msixd.service"
E1000E = (0x8086, 0x10D3)
NVME = (0x1B36, 0x0010)
VIRTIO_NET = (0x1AF4, 0x1000)
# Generous: under software emulation one msixctl call takes seconds, and msixd's start tens of them.
CALL_TIMEOUT = 300.0
T = TypeVar("T")


@dataclass(frozen=True)
class Done:
    args: list[str]
    user: str
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"{' '.join(self.args)} as {self.user}: exit {self.rc}\nstdout: {self.out}\nstderr: {self.err}"


def run(args: list[str], user: str = "root", timeout: float = CALL_TIMEOUT) -> Done:
    """Run a command as `user`: their uid, primary group and supplementary groups from /etc/group."""
    command = args if user == "root" else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return Done(args, user, done.returncode, done.stdout.strip(), done.stderr.strip())


def msixctl(*args: str, user: str = "root") -> Done:
    return run([MSIXCTL, "--timeout", str(CALL_TIMEOUT), *args], user=user)


def must(done: Done) -> Done:
    assert done.rc == 0, str(done)
    return done


def systemctl(*args: str) -> Done:
    return run(["systemctl", *args])


def unit_property(name: str) -> str:
    return must(systemctl("show", UNIT, "-p", name, "--value")).out


TIMESPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def timespan(text: str) -> float:
    """Seconds of a systemd time span as `systemctl show` prints it ("1min 30s", "500ms", "infinity")."""
    if text == "infinity":
        return float("inf")
    parts = re.findall(r"([\d.]+)\s*([a-z]+)", text)
    assert parts and all(unit in TIMESPAN_UNITS for _, unit in parts), f"not a time span: {text!r}"
    return sum(float(number) * TIMESPAN_UNITS[unit] for number, unit in parts)


def main_pid() -> int:
    return int(unit_property("MainPID"))


def wait_until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """The first truthy value of check(), polled until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


# The kernel's view

VFIO_ACTION = re.compile(r"vfio-msix\[(\d+)\]\((\S+)\)")


def vfio_vectors(bdf: str | None = None) -> dict[tuple[str, int], int]:
    """(bdf, MSI-X index) -> Linux IRQ of every vfio-msix handler in /proc/interrupts (of one device, or all)."""
    found = {}
    for line in Path("/proc/interrupts").read_text().splitlines()[1:]:
        head, _, _ = line.partition(":")
        match = VFIO_ACTION.search(line)
        if match and head.strip().isdigit() and (bdf is None or match.group(2) == bdf):
            found[(match.group(2), int(match.group(1)))] = int(head)
    return found


def indexes(bdf: str) -> list[int]:
    return sorted(index for _, index in vfio_vectors(bdf))


def irq_of(bdf: str, index: int) -> int:
    return vfio_vectors(bdf)[(bdf, index)]


def affinity(irq: int) -> tuple[str, str]:
    """(smp_affinity_list, effective_affinity_list) of an IRQ."""
    base = Path(f"/proc/irq/{irq}")
    return (base / "smp_affinity_list").read_text().strip(), (base / "effective_affinity_list").read_text().strip()


def device(ids: tuple[int, int]) -> str:
    return guest.find_device(*ids)


def driver_override(bdf: str) -> str:
    text = Path(f"/sys/bus/pci/devices/{bdf}/driver_override").read_text().strip()
    return "" if text == "(null)" else text


# The journal


def journal_cursor() -> str:
    out = must(run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"])).out
    return out.rsplit("-- cursor: ", 1)[1].strip()


def journal(cursor: str, unit: str = UNIT) -> list[dict[str, str]]:
    """The unit's journal entries after `cursor`, as journalctl -o json gives them."""
    out = must(run(["journalctl", "-u", unit, "--after-cursor", cursor, "-o", "json", "--no-pager"])).out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def msixd_events(entries: list[dict[str, str]]) -> list[dict[str, object]]:
    """msixd's own JSON lines among the unit's journal entries (systemd's lines are not JSON)."""
    events = []
    for entry in entries:
        message = entry.get("MESSAGE")
        if isinstance(message, str) and message.startswith("{"):
            try:
                events.append(json.loads(message))
            except ValueError:
                continue
    return events
