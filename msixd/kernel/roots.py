"""Where the kernel's file systems are mounted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelRoots:
    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")
    debugfs: Path = Path("/sys/kernel/debug")
    dev: Path = Path("/dev")
    # Runtime state of other daemons (irqbalance's control socket).
    run: Path = Path("/run")

    @classmethod
    def under(cls, prefix: Path | str) -> KernelRoots:
        """Roots of a tree that mirrors absolute paths, as tests/capture.py writes it."""
        prefix = Path(prefix)
        return cls(
            sysfs=prefix / "sys",
            procfs=prefix / "proc",
            debugfs=prefix / "sys/kernel/debug",
            dev=prefix / "dev",
            run=prefix / "run",
        )
