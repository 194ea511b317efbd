"""msixd.service as shipped, driven with systemctl: start, reload, restart, stop, the watchdog, the sandbox.

Root owns the nvme through msixctl; restart and start must give it back with
its placement, and stop must leave no vfio-msix vector in /proc/interrupts.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.vm import guest
from tests.vm.systemd import system
from tests.vm.systemd.system import NVME, indexes, irq_of, msixctl, must, systemctl, unit_property

pytestmark = pytest.mark.systemd_guest

CONFIG = Path("/etc/msixd/msixd.toml")
STATE = Path("/var/lib/msixd/state.json")


def seconds(name: str) -> float:
    """A *USec property (a time span) or a *TimestampMonotonic one (microseconds), in seconds."""
    value = unit_property(name)
    return int(value) / 1e6 if value.isdigit() else system.timespan(value)


class TestLifecycle:
    """In order: own the nvme, restart, stop, start, then every other change root may make."""

    def test_stop_and_start(self) -> None:
        must(systemctl("stop", system.UNIT))
        assert unit_property("ActiveState") == "inactive"
        must(systemctl("start", system.UNIT))
        assert unit_property("ActiveState") == "active" and unit_property("SubState") == "running"

    def test_root_owns_and_places(self) -> None:
        bdf = system.device(NVME)
        must(msixctl("bind", bdf))
        must(msixctl("enable", bdf, "--vectors", "8"))
        must(msixctl("affinity", bdf, "1", "1"))
        assert indexes(bdf) == list(range(8)) and system.affinity(irq_of(bdf, 1)) == ("1", "1")

    def test_restart_restores_owned_devices_and_placements(self) -> None:
        bdf = system.device(NVME)
        before = system.main_pid()
        must(systemctl("restart", system.UNIT))
        assert system.main_pid() != before
        assert indexes(bdf) == list(range(8)) and system.affinity(irq_of(bdf, 1)) == ("1", "1")

    def test_stop_leaves_no_vfio_vector(self) -> None:
        bdf = system.device(NVME)
        must(systemctl("stop", system.UNIT))
        assert system.vfio_vectors() == {}
        assert guest.driver_of(bdf) == "vfio-pci", "the device stays with vfio-pci, ready for the next start"
        assert json.loads(STATE.read_text())["devices"][bdf]["vectors"] == 8, "the desired state is kept"

    def test_start_restores_owned_devices_and_placements(self) -> None:
        bdf = system.device(NVME)
        must(systemctl("start", system.UNIT))
        assert indexes(bdf) == list(range(8)) and system.affinity(irq_of(bdf, 1)) == ("1", "1")

    def test_timeouts_fit_a_slow_machine(self) -> None:
        """Start (with a device to restore) and stop just measured here, under software emulation, fit the
        unit's own timeouts four times over; the unit states them instead of inheriting the host's defaults."""
        started = seconds("ActiveEnterTimestampMonotonic") - seconds("InactiveExitTimestampMonotonic")
        stopped = seconds("InactiveEnterTimestampMonotonic") - seconds("ActiveExitTimestampMonotonic")
        text = must(systemctl("cat", system.UNIT)).out
        assert re.search(r"^TimeoutStartSec=", text, re.M) and re.search(r"^TimeoutStopSec=", text, re.M), text
        start_limit, stop_limit = seconds("TimeoutStartUSec"), seconds("TimeoutStopUSec")
        assert 4 * started <= start_limit, f"start took {started:.1f} s; TimeoutStartSec is {start_limit:.0f} s"
        assert 4 * stopped <= stop_limit, f"stop took {stopped:.1f} s; TimeoutStopSec is {stop_limit:.0f} s"

    def test_trigger(self) -> None:
        done = must(msixctl("trigger", system.device(NVME), "5"))
        assert re.search(r"eventfd count [1-9]", done.out), done.out

    def test_watch(self) -> None:
        bdf = system.device(NVME)
        (sample,) = [json.loads(x) for x in must(msixctl("watch", bdf, "--count", "1", "-o", "json")).out.splitlines()]
        assert {v.get("vector", 0): int(v.get("total", 0)) for v in sample["vectors"]}[5] >= 1, sample

    def test_disable_one_vector(self) -> None:
        bdf = system.device(NVME)
        must(msixctl("disable", bdf, "--vector", "7"))
        assert indexes(bdf) == list(range(7))

    def test_release(self) -> None:
        bdf = system.device(NVME)
        must(msixctl("release", bdf))
        assert indexes(bdf) == [] and guest.driver_of(bdf) == "nvme" and system.driver_override(bdf) == ""


def test_reload_rereads_the_configuration() -> None:
    """SIGHUP through ExecReload: the same process, with the file's banned_cpus applied (and then lifted)."""
    bdf = system.device(NVME)  # its admin queue's vector 0 is movable, on the nvme driver
    pid = system.main_pid()

    def reload() -> None:
        cursor = system.journal_cursor()
        must(systemctl("reload", system.UNIT))
        system.wait_until(lambda: any(e.get("event") == "configuration reloaded"
                                      for e in system.msixd_events(system.journal(cursor))), 120, "the reload")

    CONFIG.write_text('banned_cpus = "1"\n')
    try:
        reload()
        refused = msixctl("affinity", bdf, "0", "1")
        assert refused.rc == 1 and "banned" in refused.err, str(refused)
    finally:
        CONFIG.write_text('banned_cpus = ""\n')  # a reload without a file keeps the running settings
        reload()
        CONFIG.unlink()
    must(msixctl("affinity", bdf, "0", "1"))
    assert system.affinity(irq_of_kernel_vector(bdf, 0))[0] == "1"
    assert system.main_pid() == pid


def irq_of_kernel_vector(bdf: str, index: int) -> int:
    """The Linux IRQ of MSI-X entry `index` of a device on its kernel driver (msi_irqs/ is in index order)."""
    return guest.msi_irqs(bdf)[index]


def test_watchdog_kills_and_restarts_a_frozen_msixd() -> None:
    frozen = system.main_pid()
    restarts = int(unit_property("NRestarts"))
    cursor = system.journal_cursor()
    os.kill(frozen, signal.SIGSTOP)
    limit = seconds("WatchdogUSec")
    system.wait_until(
        lambda: int(unit_property("NRestarts")) > restarts and unit_property("SubState") == "running",
        limit + seconds("TimeoutStopUSec") + seconds("TimeoutStartUSec"), "a restart after the watchdog fired",
        every=2,
    )
    assert system.main_pid() != frozen and not Path(f"/proc/{frozen}").exists()
    messages = [str(e.get("MESSAGE")) for e in system.journal(cursor)]
    assert any("Watchdog timeout" in m for m in messages), messages


def test_exposure_on_the_running_unit_is_at_most_3() -> None:
    done = must(system.run(["systemd-analyze", "security", "--no-pager", system.UNIT]))
    match = re.search(r"Overall exposure level for msixd.service: ([\d.]+)", done.out)
    assert match and float(match.group(1)) <= 3.0, done.out
