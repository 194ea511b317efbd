"""Capture a fixture tree inside a bench guest while vfio-msix vectors are live.

    python -m tests.vm.bench --kernel 6.12 --out /tmp/cap -- python -m tests.vm.capture_guest /mnt/guest-6.12

Binds the e1000e and the nvme to vfio-pci, enables 5 and 16 MSI-X vectors with
eventfds (plain ioctls), moves e1000e vector 3 to CPU 1, captures the tree with
tests/capture.py, then gives both devices back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests import capture
from tests.vm import guest, rawvfio

DEVICES = {(0x8086, 0x10D3): 5, (0x1B36, 0x0010): 16}


def main(out: str) -> int:
    guest.require_bench_guest()
    held = []
    drivers = {}
    try:
        for ids, vectors in DEVICES.items():
            bdf = guest.find_device(*ids)
            drivers[bdf] = guest.driver_of(bdf)
            guest.bind_vfio(bdf)
            opened = rawvfio.open_device(bdf, guest.iommu_group(bdf))
            fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(vectors)]
            if rawvfio.msix_enable(opened.device, fds) != 0:
                raise SystemExit(f"{bdf}: partial MSI-X allocation")
            held.append((opened, fds))
        e1000e = guest.find_device(0x8086, 0x10D3)
        for irq in guest.msi_irqs(e1000e):
            if Path(f"/sys/kernel/irq/{irq}/actions").read_text().strip() == f"vfio-msix[3]({e1000e})":
                Path(f"/proc/irq/{irq}/smp_affinity_list").write_text("1")
        return capture.main(["--out", out])
    finally:
        for opened, fds in held:
            rawvfio.msix_disable(opened.device)
            for fd in fds:
                os.close(fd)
            opened.close()
        for bdf, driver in drivers.items():
            guest.rebind(bdf, driver)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
