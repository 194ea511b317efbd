"""A bind that fails puts the device back on its driver: here, vfio-pci is not loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import guest
from tests.vm.systemd import system
from tests.vm.systemd.system import E1000E, msixctl, must, run

pytestmark = pytest.mark.systemd_guest


def test_bind_without_vfio_pci_leaves_the_nic_on_e1000e() -> None:
    bdf = system.device(E1000E)
    assert guest.driver_of(bdf) == "e1000e"
    must(run(["modprobe", "-r", "vfio_pci"]))
    assert not Path("/sys/module/vfio_pci").exists()
    try:
        done = msixctl("bind", bdf)
        assert done.rc == 1 and "back on e1000e" in done.err, str(done)
        assert guest.driver_of(bdf) == "e1000e" and system.driver_override(bdf) == ""
        assert Path(f"/sys/bus/pci/devices/{bdf}/net").is_dir(), "its network interface is there again"
    finally:
        must(run(["modprobe", "vfio-pci"]))
        # DeviceAllow=char-vfio was resolved with the vfio major of the module that just left.
        must(system.systemctl("restart", system.UNIT))
        if guest.driver_of(bdf) != "e1000e":
            guest.rebind(bdf, "e1000e")
