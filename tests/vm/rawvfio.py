"""VFIO with plain os/fcntl/struct, independent of msixd's own code (guest only).

Used to prove the kernel interface by itself, and to make the e1000e raise a
real MSI-X interrupt through its BAR0 (registers as Linux's e1000e driver names
them: drivers/net/ethernet/intel/e1000e/regs.h and defines.h).
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU = 0x3B64, 0x3B65, 0x3B66
GROUP_GET_STATUS, GROUP_SET_CONTAINER, GROUP_GET_DEVICE_FD = 0x3B67, 0x3B68, 0x3B6A
DEVICE_GET_INFO, DEVICE_GET_REGION_INFO, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS = 0x3B6B, 0x3B6C, 0x3B6D, 0x3B6E
TYPE1v2 = 3
MSIX = 2
CONFIG_REGION, BAR0 = 7, 0
NORESIZE = 8

# 82574 (e1000e) registers: interrupt cause set/mask set/cause read, and IVAR,
# which routes the Rx queue 0 cause (ICR bit 20) to an MSI-X vector (bits 2:0,
# valid bit 3).
E1000_ICR, E1000_ICS, E1000_IMS, E1000_IVAR = 0xC0, 0xC8, 0xD0, 0xE4
# Interrupt throttling, per MSI-X vector (EITR0..4) and for the whole function (ITR).
E1000_ITR, E1000_EITR = 0xC4, 0xE8
E1000_ICR_RXQ0 = 1 << 20
# Device control: RST resets the MAC (self-clearing), not the PCI function.
E1000_CTRL, E1000_CTRL_RST = 0x0, 1 << 26
PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x2, 0x4


@dataclass
class Opened:
    container: int
    group: int
    device: int
    group_flags: int
    api_version: int
    type1v2: bool

    def close(self) -> None:
        for fd in (self.device, self.group, self.container):
            os.close(fd)


def open_device(bdf: str, group: int) -> Opened:
    container = os.open("/dev/vfio/vfio", os.O_RDWR | os.O_CLOEXEC)
    api = fcntl.ioctl(container, GET_API_VERSION)
    type1v2 = fcntl.ioctl(container, CHECK_EXTENSION, TYPE1v2) > 0
    group_fd = os.open(f"/dev/vfio/{group}", os.O_RDWR | os.O_CLOEXEC)
    status = bytearray(struct.pack("=II", 8, 0))
    fcntl.ioctl(group_fd, GROUP_GET_STATUS, status)
    flags = struct.unpack("=II", status)[1]
    fcntl.ioctl(group_fd, GROUP_SET_CONTAINER, bytearray(struct.pack("=i", container)))
    fcntl.ioctl(container, SET_IOMMU, TYPE1v2)
    device = fcntl.ioctl(group_fd, GROUP_GET_DEVICE_FD, bytearray(bdf.encode() + b"\0"))  # mutable: the fd comes back
    return Opened(container, group_fd, device, flags, api, type1v2)


def device_info(device: int) -> tuple[int, int, int]:
    buf = bytearray(struct.pack("=IIIIII", 24, 0, 0, 0, 0, 0))
    fcntl.ioctl(device, DEVICE_GET_INFO, buf)
    _, flags, regions, irqs, _, _ = struct.unpack("=IIIIII", buf)
    return flags, regions, irqs


def irq_info(device: int, index: int) -> tuple[int, int]:
    buf = bytearray(struct.pack("=IIII", 16, 0, index, 0))
    fcntl.ioctl(device, DEVICE_GET_IRQ_INFO, buf)
    _, flags, _, count = struct.unpack("=IIII", buf)
    return flags, count


def region_offset(device: int, index: int) -> int:
    buf = bytearray(struct.pack("=IIIIQQ", 32, 0, index, 0, 0, 0))
    fcntl.ioctl(device, DEVICE_GET_REGION_INFO, buf)
    return struct.unpack("=IIIIQQ", buf)[5]


def msix_enable(device: int, fds: list[int]) -> int:
    return msix_set(device, 0, fds)


def msix_set(device: int, start: int, fds: list[int]) -> int:
    """SET_IRQS DATA_EVENTFD|ACTION_TRIGGER on vectors start..: an fd of -1 releases that vector."""
    buf = bytearray(struct.pack(f"=IIIII{len(fds)}i", 20 + 4 * len(fds), 0x24, MSIX, start, len(fds), *fds))
    return fcntl.ioctl(device, DEVICE_SET_IRQS, buf)


def msix_trigger(device: int, vector: int) -> None:
    """SET_IRQS DATA_NONE|ACTION_TRIGGER on one vector: a loopback interrupt, its eventfd counts it."""
    fcntl.ioctl(device, DEVICE_SET_IRQS, bytearray(struct.pack("=IIIII", 20, 0x21, MSIX, vector, 1)))


def msix_disable(device: int) -> None:
    fcntl.ioctl(device, DEVICE_SET_IRQS, bytearray(struct.pack("=IIIII", 20, 0x21, MSIX, 0, 0)))


def raise_e1000e_interrupt(device: int, vector: int) -> None:
    """Make the e1000e send one real MSI-X message on `vector` (0..4).

    Turns on memory decode and bus mastering in the (virtual) command
    register, routes the Rx queue 0 cause to the vector, unmasks it, and sets
    it through ICS; the cause is cleared first so an old one does not hide this one.
    """
    config = region_offset(device, CONFIG_REGION)
    (command,) = struct.unpack("<H", os.pread(device, 2, config + PCI_COMMAND))
    os.pwrite(device, struct.pack("<H", command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), config + PCI_COMMAND)
    bar0 = region_offset(device, BAR0)

    def write(register: int, value: int) -> None:
        os.pwrite(device, struct.pack("<I", value), bar0 + register)

    # Throttling asked off (QEMU 7.2 still keeps at least E1000E_MIN_XITR, so every message arms a
    # timer: see quiesce_e1000e).
    write(E1000_ITR, 0)
    write(E1000_EITR + 4 * vector, 0)
    os.pread(device, 4, bar0 + E1000_ICR)
    # In MSI-X mode reading ICR does not clear it, and a cause still set raises no new message (QEMU
    # hw/net/e1000e_core.c: e1000e_mac_icr_read, msi_causes_pending in e1000e_send_msi): clear it by
    # writing it (ICR is write-1-to-clear), so that every call raises one message.
    write(E1000_ICR, E1000_ICR_RXQ0)
    write(E1000_IVAR, 0x8 | vector)
    write(E1000_IMS, E1000_ICR_RXQ0)
    write(E1000_ICS, E1000_ICR_RXQ0)


def quiesce_e1000e(device: int) -> None:
    """Stop the emulated e1000e's interrupt timers before MSI-X is disabled or the device closed.

    QEMU 7.2 arms a throttling timer for every MSI-X message (hw/net/e1000e_core.c: EITR is never
    below E1000E_MIN_XITR, about 128 us), and its handler asserts that MSI-X is still enabled: when the
    host is busy the timer can fire after the guest has disabled MSI-X, and QEMU aborts. A MAC reset
    (CTRL.RST: e1000e_reset -> e1000e_intrmgr_reset) deletes the timers under QEMU's lock, so none can
    fire afterwards; the PCI function, and its MSI-X state, are untouched.
    """
    bar0 = region_offset(device, BAR0)
    (control,) = struct.unpack("<I", os.pread(device, 4, bar0 + E1000_CTRL))
    os.pwrite(device, struct.pack("<I", control | E1000_CTRL_RST), bar0 + E1000_CTRL)
