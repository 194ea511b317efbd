"""A memory file (memfd_create(2)) holding one record that survives its writer: two slots and a header.

msixd keeps what the kernel cannot tell it after a restart in such a file,
stored in systemd's file descriptor store: the same open file is shared with
systemd's copy, so what msixd writes is what the next msixd reads. The writer
may die at any instant (a crash, the watchdog's SIGABRT): a record is written
whole to the slot not in use, then the header is switched to it with one
small pwrite, so a reader finds the last complete record or the one before,
never a torn one; a checksum (zlib's CRC-32) tells.
"""

from __future__ import annotations

import os
import struct
import zlib

MAGIC = b"MSIXDRT1"
_HEADER = struct.Struct("=8sQQQI")  # magic, sequence, slot offset, length, crc32
SLOTS = (4096, 4096 + (64 << 20))  # a memfd is sparse: an unused slot costs nothing
MAX_RECORD = 64 << 20


def create(name: str) -> int:
    return os.memfd_create(name, os.MFD_CLOEXEC)


def _header(fd: int) -> tuple[int, int, int, int] | None:
    raw = os.pread(fd, _HEADER.size, 0)
    if len(raw) < _HEADER.size:
        return None
    magic, sequence, offset, length, crc = _HEADER.unpack(raw)
    if magic != MAGIC or offset not in SLOTS or length > MAX_RECORD:
        return None
    return sequence, offset, length, crc


def write(fd: int, record: bytes) -> None:
    """Write record to the free slot, then point the header at it."""
    if len(record) > MAX_RECORD:
        raise ValueError(f"a record is at most {MAX_RECORD} bytes, not {len(record)}")
    header = _header(fd)
    sequence, offset = (header[0], header[1]) if header else (0, SLOTS[1])
    target = SLOTS[0] if offset == SLOTS[1] else SLOTS[1]
    written = 0
    while written < len(record):
        written += os.pwrite(fd, record[written:], target + written)
    os.pwrite(fd, _HEADER.pack(MAGIC, sequence + 1, target, len(record), zlib.crc32(record)), 0)


def read(fd: int) -> bytes | None:
    """The last complete record; None when there is none (or the file is not such a file)."""
    header = _header(fd)
    if header is None:
        return None
    _, offset, length, crc = header
    record = os.pread(fd, length, offset)
    return record if len(record) == length and zlib.crc32(record) == crc else None
