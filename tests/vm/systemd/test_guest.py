"""The systemd guest itself: what its tests rely on."""

from __future__ import annotations

import pytest

from tests.vm.systemd import system

pytestmark = pytest.mark.systemd_guest


def test_e1000e_runs_unthrottled() -> None:
    """QEMU 7.2 aborts when an e1000e throttling timer fires after MSI-X is disabled (modprobe.d sets it off)."""
    kernel = system.must(system.run(["journalctl", "-k", "-b", "-o", "cat", "--no-pager"])).out.splitlines()
    lines = [line for line in kernel if "Interrupt Throttling Rate" in line]
    assert lines and all(line.endswith("turned off") for line in lines), lines


def test_irqbalance_is_installed_and_left_to_the_tests() -> None:
    assert system.run(["systemctl", "is-enabled", "irqbalance.service"]).out == "disabled"
    assert system.run(["systemctl", "is-active", "irqbalance.service"]).out == "inactive"
