"""Copy the part of a live /sys, /proc and debugfs that msixd reads into a fixture tree.

    python tests/capture.py --out tests/fixtures/host-6.18

Only reads the live system. The output mirrors absolute paths (``OUT/sys/...``,
``OUT/proc/...``) so ``KernelRoots.under(OUT)`` points msixd at it. Symbolic
links that msixd reads with readlink (``driver``, ``iommu_group``) are kept as
links with their original text. Git keeps no file modes beyond the executable
bit, and msixd reads the mode of ``/proc/irq/N/smp_affinity_list`` (0444 means
the kernel will not move the IRQ), so every file's mode goes into ``OUT/MODES``
and ``tests/fixturetree.py`` puts them back when a test copies the tree.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import stat
import sys
import time
from pathlib import Path

PCI_DEVICE_FILES = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "config", "numa_node", "local_cpulist", "irq", "driver_override",
)
PCI_DEVICE_LINKS = ("driver", "iommu_group", "iommu")
PROC_IRQ_FILES = (
    "smp_affinity", "smp_affinity_list", "effective_affinity", "effective_affinity_list",
    "node", "affinity_hint", "spurious",
)
CPU_FILES = ("online", "possible", "present", "offline", "isolated", "nohz_full")
SINGLE_FILES = (
    "proc/cmdline", "proc/sys/kernel/osrelease", "proc/irq/default_smp_affinity", "proc/stat",
    "sys/module/vfio/parameters/enable_unsafe_noiommu_mode",
    "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
)


class Capture:
    def __init__(self, source: Path, out: Path) -> None:
        self.source = source
        self.out = out
        self.modes: dict[str, int] = {}

    def file(self, rel: str) -> None:
        src = self.source / rel
        try:
            data = src.read_bytes()
            mode = stat.S_IMODE(src.stat().st_mode)
        except OSError:  # write-only, vanished, or not there on this kernel
            return
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        self.modes[rel] = mode

    def link(self, rel: str) -> None:
        try:
            target = os.readlink(self.source / rel)
        except OSError:
            return
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(target)

    def directory(self, rel: str) -> None:
        (self.out / rel).mkdir(parents=True, exist_ok=True)

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.source / rel))
        except OSError:
            return []

    def tree(self, rel: str) -> None:
        """Every regular file below rel (debugfs irq: small, all of it matters)."""
        for name in self.listdir(rel):
            child = f"{rel}/{name}"
            path = self.source / child
            if path.is_dir() and not path.is_symlink():
                self.tree(child)
            else:
                self.file(child)

    def names(self) -> None:
        """The links naming network interfaces and block devices, and what they point into: a block
        device's multipath/ links (NVMe native multipath)."""
        for cls in ("net", "block"):
            for name in self.listdir(f"sys/class/{cls}"):
                self.link(f"sys/class/{cls}/{name}")
                target = os.path.realpath(self.source / f"sys/class/{cls}/{name}")
                relative = os.path.relpath(target, self.source)
                for path in self.listdir(f"{relative}/multipath"):
                    self.link(f"{relative}/multipath/{path}")

    def run(self) -> None:
        self.names()
        for rel in SINGLE_FILES:
            self.file(rel)
        for name in CPU_FILES:
            self.file(f"sys/devices/system/cpu/{name}")
        for bdf in self.listdir("sys/bus/pci/devices"):
            base = f"sys/bus/pci/devices/{bdf}"
            self.directory(base)
            for name in PCI_DEVICE_FILES:
                self.file(f"{base}/{name}")
            for name in PCI_DEVICE_LINKS:
                self.link(f"{base}/{name}")
            for irq in self.listdir(f"{base}/msi_irqs"):
                self.file(f"{base}/msi_irqs/{irq}")
        for driver in self.listdir("sys/bus/pci/drivers"):
            self.directory(f"sys/bus/pci/drivers/{driver}")
        for group in self.listdir("sys/kernel/iommu_groups"):
            for bdf in self.listdir(f"sys/kernel/iommu_groups/{group}/devices"):
                self.link(f"sys/kernel/iommu_groups/{group}/devices/{bdf}")
        for irq in self.listdir("sys/kernel/irq"):
            for name in self.listdir(f"sys/kernel/irq/{irq}"):
                self.file(f"sys/kernel/irq/{irq}/{name}")
        for irq in self.listdir("proc/irq"):
            if not irq.isdigit():
                continue
            for name in self.listdir(f"proc/irq/{irq}"):
                if name in PROC_IRQ_FILES:
                    self.file(f"proc/irq/{irq}/{name}")
                elif (self.source / f"proc/irq/{irq}/{name}").is_dir():
                    self.directory(f"proc/irq/{irq}/{name}")  # one per action name
        self.tree("sys/kernel/debug/irq")
        # Last: counts only grow, so /proc/interrupts is never behind per_cpu_count.
        self.file("proc/interrupts")
        for name in self.listdir("dev/vfio"):
            # Character devices cannot live in git; an empty file stands for each node.
            self.directory("dev/vfio")
            (self.out / "dev/vfio" / name).touch()
            self.modes[f"dev/vfio/{name}"] = 0o600
        self.write_manifest()

    def write_manifest(self) -> None:
        lines = [f"{mode:04o} {rel}" for rel, mode in sorted(self.modes.items())]
        (self.out / "MODES").write_text("\n".join(lines) + "\n")
        uname = platform.uname()
        (self.out / "CAPTURE").write_text(
            f"source: {self.source}\nrelease: {uname.release}\nmachine: {uname.machine}\n"
            f"euid: {os.geteuid()}\ncaptured: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="fixture directory to (re)create")
    parser.add_argument("--source", type=Path, default=Path("/"), help="root of the live tree")
    parser.add_argument("--add-names", action="store_true",
                        help="only add the class links and /proc/stat to an existing fixture (MODES is kept)")
    args = parser.parse_args(argv)
    if args.add_names:
        capture = Capture(args.source, args.out)
        capture.names()
        capture.file("proc/stat")
        with (args.out / "MODES").open("a") as modes:
            modes.writelines(f"{mode:04o} {rel}\n" for rel, mode in sorted(capture.modes.items()))
        print(f"added the names and proc/stat of {args.source} to {args.out}")
        return 0
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    Capture(args.source, args.out).run()
    print(f"captured {args.source} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
