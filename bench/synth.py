"""Synthetic, kernel-faithful sysfs/procfs trees for hosts far larger than this one.

    python -m bench.synth --cpus 1024 --irqs 16384 --out /tmp/tree

Every file has the format the kernel gives it (and the captured fixtures in
tests/fixtures/ show): per-device remapped MSI-X domains (chip
IR-PCI-MSIX-<bdf>, hwirq = table index, 6.2+), per_cpu_count over every
possible CPU (counts on the vector's effective CPU, and for every fourth
vector on the CPU it was moved from, zeros elsewhere), 0644 smp_affinity
lists, a real MSI-X capability in a 4096-byte config space. IRQs are spread
over devices with tables of up to 2048 entries.
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

MAX_TABLE = 2048
FIRST_IRQ = 64


def config_space(table_size: int) -> bytes:
    """PCIe config space with a capability list holding MSI-X at 0x40 (enabled)."""
    config = bytearray(4096)
    struct.pack_into("<HH", config, 0, 0x15B3, 0x101D)  # vendor, device
    struct.pack_into("<H", config, 0x06, 0x0010)  # status: capability list
    config[0x34] = 0x40
    config[0x40], config[0x41] = 0x11, 0x00  # MSI-X, end of list
    struct.pack_into("<HII", config, 0x42, 0x8000 | (table_size - 1), 0x2000, 0x3000)
    return bytes(config)


def cpulist(cpus: range) -> str:
    return f"{cpus.start}-{cpus.stop - 1}" if len(cpus) > 1 else str(cpus.start)


def mask(cpus: set[int], ncpus: int) -> str:
    value = sum(1 << c for c in cpus)
    digits = f"{value:0{(ncpus + 3) // 4}x}"
    head = len(digits) % 8 or 8
    return ",".join([digits[:head]] + [digits[i : i + 8] for i in range(head, len(digits), 8)])


def write(path: Path, text: str | bytes, mode: int = 0o444) -> None:
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def generate(out: Path, ncpus: int, nirqs: int) -> list[str]:
    """Write the tree; return the BDFs of its MSI-X devices."""
    sys_dir, proc = out / "sys", out / "proc"
    cpu_dir = sys_dir / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    everyone = cpulist(range(ncpus))
    for name, value in (("online", everyone), ("possible", everyone), ("present", everyone),
                        ("isolated", ""), ("nohz_full", "")):
        write(cpu_dir / name, value + "\n")
    (proc / "sys/kernel").mkdir(parents=True)
    write(proc / "sys/kernel/osrelease", "6.12.0-synthetic\n")
    (sys_dir / "bus/pci/drivers/mlx5_core").mkdir(parents=True)
    devices = sys_dir / "bus/pci/devices"
    devices.mkdir(parents=True)
    bdfs = []
    irq = FIRST_IRQ
    remaining = nirqs
    number = 0
    while remaining > 0:
        table = min(MAX_TABLE, remaining)
        bdf = f"0000:{0x10 + number // 32:02x}:{number % 32:02x}.0"
        number += 1
        bdfs.append(bdf)
        node = number % 2
        local = range(node * ncpus // 2, (node + 1) * ncpus // 2) if ncpus > 1 else range(1)
        device = devices / bdf
        (device / "msi_irqs").mkdir(parents=True)
        for name, value in (("vendor", "0x15b3"), ("device", "0x101d"), ("class", "0x020000"),
                            ("subsystem_vendor", "0x15b3"), ("subsystem_device", "0x0016"),
                            ("numa_node", f"{node}"), ("local_cpulist", cpulist(local))):
            write(device / name, value + "\n")
        write(device / "config", config_space(table), 0o644)
        (device / "driver").symlink_to("../../../bus/pci/drivers/mlx5_core")
        for index in range(table):
            write(device / "msi_irqs" / str(irq), "msix\n")
            sys_irq = sys_dir / "kernel/irq" / str(irq)
            sys_irq.mkdir(parents=True)
            write(sys_irq / "chip_name", f"IR-PCI-MSIX-{bdf}\n")
            write(sys_irq / "hwirq", f"{index}\n")
            write(sys_irq / "actions", f"mlx5_comp{index}@pci:{bdf}\n")
            cpu = local[index % len(local)]
            counts = [0] * ncpus
            counts[cpu] = 1 + irq * 7919 % 10_000_000
            if index % 4 == 3:
                counts[local[0]] += 1 + irq * 104729 % 1_000_000
            write(sys_irq / "per_cpu_count", ",".join(map(str, counts)) + "\n")
            write(sys_irq / "type", "edge\n")
            write(sys_irq / "name", "edge\n")
            write(sys_irq / "wakeup", "disabled\n")
            proc_irq = proc / "irq" / str(irq)
            proc_irq.mkdir(parents=True)
            write(proc_irq / "smp_affinity", mask({cpu}, ncpus) + "\n", 0o644)
            write(proc_irq / "smp_affinity_list", f"{cpu}\n", 0o644)
            write(proc_irq / "effective_affinity", mask({cpu}, ncpus) + "\n")
            write(proc_irq / "effective_affinity_list", f"{cpu}\n")
            write(proc_irq / "node", f"{node}\n")
            irq += 1
        remaining -= table
    return bdfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--irqs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bdfs = generate(args.out, args.cpus, args.irqs)
    print(f"{len(bdfs)} devices, {args.irqs} IRQs, {args.cpus} CPUs under {args.out}")


if __name__ == "__main__":
    main()
