"""A stand-in for the PCI bus's sysfs binding files over a captured tree.

A captured tree is plain files: writing `unbind` or `drivers_probe` there
changes nothing. FakePciBus wraps msixd.kernel.pcibind's writer and does what
the kernel does with those writes (drivers/pci/pci-driver.c, drivers/base/bus.c):

- `drivers/<d>/unbind` <- bdf: the device loses its `driver` link;
- `drivers_probe` <- bdf: a device with a `driver_override` goes to that driver
  only, and stays without one when that driver is not loaded (pci_match_device);
  without an override, to the driver its IDs match (`id_drivers`);
- `driver_override` keeps what was written; a bare newline clears it (it then
  reads `(null)`, as the kernel's does).

Only drivers named in `loaded` exist. Every write is recorded in `writes`;
`fail_on` makes a write to a path ending so fail with that errno.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from msixd.kernel import pcibind


class FakePciBus:
    def __init__(self, root: Path, loaded: set[str], id_drivers: dict[str, str]) -> None:
        self.root = root
        self.loaded = set(loaded)
        self.id_drivers = dict(id_drivers)  # bdf -> the driver its vendor/device IDs match
        self.writes: list[tuple[str, str]] = []
        self.fail_on: dict[str, int] = {}
        for driver in self.loaded:
            (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakePciBus:
        monkeypatch.setattr(pcibind, "write_text", self.write)
        return self

    def device(self, bdf: str) -> Path:
        return self.root / "sys/bus/pci/devices" / bdf

    def driver_of(self, bdf: str) -> str | None:
        link = self.device(bdf) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def override_of(self, bdf: str) -> str:
        path = self.device(bdf) / "driver_override"
        text = path.read_text().strip() if path.exists() else ""
        return "" if text == "(null)" else text

    def attach(self, bdf: str, driver: str) -> None:
        link = self.device(bdf) / "driver"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"../../../bus/pci/drivers/{driver}")

    def write(self, path: str, text: str) -> None:
        rel = os.path.relpath(path, self.root)
        self.writes.append((rel, text))
        for suffix, code in self.fail_on.items():
            if rel.endswith(suffix):
                raise OSError(code, os.strerror(code), path)
        parts = rel.split("/")
        if rel == "sys/bus/pci/drivers_probe":
            self._probe(text.strip())
        elif parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[-1] == "unbind":
            bdf = text.strip()
            if self.driver_of(bdf) != parts[4]:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), path)
            (self.device(bdf) / "driver").unlink()
        elif parts[-1] == "driver_override":
            Path(path).write_text(text if text.strip() else "(null)\n")  # as the kernel shows "none"
        else:
            Path(path).write_text(text)

    def _probe(self, bdf: str) -> None:
        if self.driver_of(bdf) is not None:
            return
        override = self.override_of(bdf)
        driver = override or self.id_drivers.get(bdf)
        if driver and driver in self.loaded:
            self.attach(bdf, driver)
