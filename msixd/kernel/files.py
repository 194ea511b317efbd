"""Small readers for kernel text files.

sysfs and procfs files are read with one open and a read loop: inventories read
tens of thousands of them, and the io module's layers cost more than the read.
A file that is missing returns None: objects come and go under a reader (an IRQ
freed between listing and reading is normal), and the caller decides.
"""

from __future__ import annotations

import errno
import os
import re

from msixd.errors import ResourceExhausted

# Failures that say nothing about the file, only that msixd is out of something:
# never to be read as "no such file" (a device reported missing because msixd
# ran out of descriptors would be a lie).
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})

_CHUNK = 65536
_DECIMAL = re.compile(r"-?[0-9]{1,20}")
# The widths of the kernel's numbers, which are also the API's field widths.
U32_MAX = 2**32 - 1
S32_MAX = 2**31 - 1
U64_MAX = 2**64 - 1


def decimal(text: str, low: int, high: int) -> int | None:
    """text as a decimal integer from low to high, or None when it is not one.

    The digits are counted before int() sees them: a kernel writes no number of
    more than 20 (u64), and int() refuses more than 4300 with a ValueError.
    """
    if text.isdigit() and text.isascii() and len(text) <= 20:  # the common case, without the regex
        value = int(text)
    elif _DECIMAL.fullmatch(text) is None:
        return None
    else:
        value = int(text)
    return value if low <= value <= high else None


def read_bytes(path: str) -> bytes | None:
    """The whole file, or None when it cannot be read as an attribute.

    Missing, a directory, write-only (sysfs "remove"), or an error from the
    kernel while reading (EIO, ENODEV: the device went away between open and
    read): for an attribute all of these mean "no value now". Running out of
    descriptors or memory is ResourceExhausted, never "no value".
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _EXHAUSTED:
            raise ResourceExhausted(f"cannot read {path}: {os.strerror(err.errno)}") from err
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        parts = [data]
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_at(path: str, offset: int, size: int) -> bytes | None:
    """size bytes of the file from offset (fewer at its end), with one pread(2); None as read_bytes.

    For PCI config space: each dword read is a config access (a trap under
    virtualization, an MMIO read on bare metal), so a reader takes the ranges
    it needs, not the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _EXHAUSTED:
            raise ResourceExhausted(f"cannot read {path}: {os.strerror(err.errno)}") from err
        return None
    try:
        return os.pread(fd, size, offset)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text_mode(path: str) -> tuple[str, int] | None:
    """The file's text (as read_text) and its st_mode, from one open: fstat(2) on the open
    file costs less than a stat(2) of the path. None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _EXHAUSTED:
            raise ResourceExhausted(f"cannot read {path}: {os.strerror(err.errno)}") from err
        return None
    try:
        mode = os.fstat(fd).st_mode
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").rstrip("\n"), mode


def read_text(path: str) -> str | None:
    """The file's text without its trailing newline, or None when read_bytes gives None.

    read_bytes' steps, written out: this runs eight times for every vector of an
    inventory, and a call less is a tenth of a bare read's cost.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _EXHAUSTED:
            raise ResourceExhausted(f"cannot read {path}: {os.strerror(err.errno)}") from err
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").rstrip("\n")


def read_link_name(path: str) -> str | None:
    """Last component of a symbolic link's target (e.g. a driver name), or None."""
    try:
        return os.readlink(path).rpartition("/")[2]  # os.path.basename, without its calls
    except OSError:  # missing, or not a link
        return None


def list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        if err.errno in _EXHAUSTED:
            raise ResourceExhausted(f"cannot list {path}: {os.strerror(err.errno)}") from err
        raise


def inode(path: str) -> int | None:
    """The inode number of path (links followed), or None when it does not exist.

    sysfs gives every kernfs node its own number and does not reuse it at
    once, so a device directory that was removed and created again (hot
    removal, rescan) has a new one, while an unbind leaves it as it was.
    """
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def errno_of(err: OSError) -> int:
    """The errno of a failed system call. The os and fcntl functions always set one; the type
    allows None (an OSError raised by hand), for which EIO stands in."""
    return err.errno if err.errno is not None else errno.EIO


def write_text(path: str, text: str) -> None:
    """One write(2) of text, as `echo text > path` does; OSError carries the kernel's errno.

    sysfs and procfs attributes take a whole value per write; O_TRUNC makes the
    same call correct on a regular-file tree.
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
