"""Desired state that survives a restart: which devices msixd owns, and how.

One JSON file, replaced atomically (write a temporary file, fsync, rename,
fsync the directory), so a crash leaves the old state or the new one, never a
torn one. Every field is checked on loading (types, BDF syntax, vector and CPU
ranges, driver names): a file that is not exactly what msixd writes is moved
aside, not deleted, and msixd starts empty. Loading never raises: a state file
must not stop msixd from starting, every time, in a restart loop.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import structlog

from msixd.errors import InvalidBdf
from msixd.kernel.cpulist import MAX_CPUS
from msixd.kernel.pci import MSIX_TABLE_MAX, parse_bdf

log = structlog.get_logger(__name__)
FORMAT_VERSION = 1
# A driver is a directory under /sys/bus/pci/drivers: a name without "/" (printable
# ASCII here, as the kernel's PCI drivers are named), at most NAME_MAX bytes.
_DRIVER = re.compile(r"[!-.0-~]{1,255}")
_INDEX = re.compile(r"0|[1-9][0-9]{0,3}")
_ENTRY_FIELDS = frozenset({"vectors", "affinities", "previous_driver"})


class CorruptState(ValueError):
    """The state file holds something msixd never writes; the message says where."""


@dataclass
class DeviceState:
    vectors: int = 0
    # MSI-X index -> CPUs, as last placed through msixd.
    affinities: dict[int, list[int]] = field(default_factory=dict)
    # The driver the device had before msixd bound it to vfio-pci.
    previous_driver: str | None = None


def _refuse(where: str, value: object, expected: str) -> NoReturn:
    try:
        shown = repr(value)
    except ValueError:  # an int of more digits than repr() converts
        shown = "a number of thousands of digits"
    raise CorruptState(f"{where}: {shown if len(shown) <= 60 else shown[:57] + '...'} is not {expected}")


def _integer(where: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # bool is an int to isinstance
        _refuse(where, value, f"an integer from {low} to {high}")
    return value


def _device(bdf: str, entry: object) -> DeviceState:
    where = f"devices[{bdf!r}]"
    if not isinstance(entry, dict):
        _refuse(where, entry, "an object")
    unknown = set(entry) - _ENTRY_FIELDS
    if unknown:
        _refuse(where, sorted(unknown), f"known fields ({', '.join(sorted(_ENTRY_FIELDS))})")
    if "vectors" not in entry:
        raise CorruptState(f"{where}: no vectors")
    vectors = _integer(f"{where}.vectors", entry["vectors"], 0, MSIX_TABLE_MAX)
    raw_affinities = entry.get("affinities", {})
    if not isinstance(raw_affinities, dict):
        _refuse(f"{where}.affinities", raw_affinities, "an object")
    affinities: dict[int, list[int]] = {}
    for index_text, raw_cpus in raw_affinities.items():
        at = f"{where}.affinities[{index_text[:20]!r}]"
        if not _INDEX.fullmatch(index_text) or int(index_text) >= MSIX_TABLE_MAX:
            _refuse(at, index_text, f"an MSI-X index from 0 to {MSIX_TABLE_MAX - 1}")
        if not isinstance(raw_cpus, list) or not raw_cpus:
            _refuse(at, raw_cpus, "a list of CPUs")
        cpus = [_integer(at, cpu, 0, MAX_CPUS - 1) for cpu in raw_cpus]
        if len(set(cpus)) != len(cpus):
            _refuse(at, raw_cpus, "a list of distinct CPUs")
        affinities[int(index_text)] = sorted(cpus)
    driver = entry.get("previous_driver")
    if driver is not None and (not isinstance(driver, str) or not _DRIVER.fullmatch(driver) or driver in (".", "..")):
        _refuse(f"{where}.previous_driver", driver, "a driver name or null")
    return DeviceState(vectors, affinities, driver)


def _no_constant(name: str) -> NoReturn:
    raise CorruptState(f"{name} is not a number msixd writes")


def parse_state(data: bytes) -> dict[str, DeviceState]:
    """The devices of a state file's bytes; CorruptState, or the error it met, when they are not state."""
    document = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(document, dict):
        _refuse("the file", document, "an object")
    if set(document) != {"version", "devices"}:
        _refuse("the file", sorted(document), "exactly the fields version and devices")
    if type(document["version"]) is not int or document["version"] != FORMAT_VERSION:
        raise CorruptState(f"unknown state format {document['version']!r}")
    devices = document["devices"]
    if not isinstance(devices, dict):
        _refuse("devices", devices, "an object")
    state: dict[str, DeviceState] = {}
    for bdf, entry in devices.items():
        try:
            canonical = parse_bdf(bdf)
        except InvalidBdf:
            canonical = None
        if canonical != bdf:
            _refuse("devices", bdf, "a PCI address as msixd writes it (DDDD:BB:DD.F)")
        state[bdf] = _device(bdf, entry)
    return state


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, DeviceState]:
        """The saved state; {} when there is none, or when the file is not state (it is moved aside)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:  # a directory in its place, say
            return self._aside(f"cannot be read: {os.strerror(err.errno or 0)}")
        try:
            return parse_state(data)
        except RecursionError:  # json's C decoder, on arrays or objects nested thousands deep
            return self._aside("nested too deeply")
        except ValueError as err:  # CorruptState; JSON, UTF-8 and int() errors are ValueErrors too
            return self._aside(str(err)[:300])

    def _aside(self, why: str) -> dict[str, DeviceState]:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        number = 1
        while aside.exists() or aside.is_symlink():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
            number += 1
        try:
            os.replace(self.path, aside)
        except OSError as err:
            log.error("state file unreadable, and it cannot be moved aside; starting with no state",
                      path=str(self.path), error=why, move_error=os.strerror(err.errno or 0))
            return {}
        log.error("state file unreadable, moved aside; starting with no state", path=str(self.path),
                  moved_to=str(aside), error=why)
        return {}

    def save(self, devices: dict[str, DeviceState]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "devices": {
                bdf: {
                    "vectors": state.vectors,
                    "affinities": {str(k): v for k, v in sorted(state.affinities.items())},
                    "previous_driver": state.previous_driver,
                }
                for bdf, state in sorted(devices.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
