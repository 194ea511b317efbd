"""Which processes hold a file open, from /proc/<pid>/fd (what fuser does)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from msixd.kernel.files import list_dir, read_text
from msixd.kernel.roots import KernelRoots


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str


def holders(roots: KernelRoots, path: str) -> list[Holder]:
    """Processes with an open descriptor on path; those that exit meanwhile are skipped."""
    found = []
    for pid in list_dir(str(roots.procfs)):
        if not pid.isdigit():
            continue
        fd_dir = f"{roots.procfs}/{pid}/fd"
        for fd in list_dir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target == path:
                command = (read_text(f"{roots.procfs}/{pid}/cmdline") or "").replace("\0", " ").strip()
                found.append(Holder(int(pid), command or read_text(f"{roots.procfs}/{pid}/comm") or "?"))
                break
    return found


def groups_of(roots: KernelRoots, pid: int) -> frozenset[int]:
    """Supplementary group ids of a live process ("Groups:" in /proc/<pid>/status); empty if it exited."""
    status = read_text(f"{roots.procfs}/{pid}/status") or ""
    for line in status.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:])
    return frozenset()
