"""What deploy/install.sh left in the guest, run in a chroot as the README tells a user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.vm.systemd import system
from tests.vm.systemd_guest import BENCH_DIR

pytestmark = pytest.mark.systemd_guest

INSTALL = json.loads(Path(BENCH_DIR, "install.json").read_text()) if Path(BENCH_DIR, "install.json").exists() else {}


def test_installer_succeeded() -> None:
    assert INSTALL.get("rc") == 0, INSTALL.get("log")


def test_installer_left_no_process_running_on_the_host() -> None:
    """Run in a chroot, there is no systemd to hand msixd to: starting it anyway left it running on the host."""
    assert INSTALL.get("left_running") == {}, INSTALL.get("log")


def test_installer_enabled_the_unit() -> None:
    assert INSTALL.get("enabled_by") == "installer", INSTALL.get("log")


def test_installed_environment_uses_the_system_python() -> None:
    """Root's PATH started with a per-user interpreter in /root; the installed venv must not point there."""
    lines = Path("/opt/msixd/pyvenv.cfg").read_text().splitlines()
    config = dict(line.split(" = ", 1) for line in lines if " = " in line)
    assert config["home"] == "/usr/bin", config
    assert os.path.realpath("/opt/msixd/bin/python3").startswith("/usr/bin/python3"), os.path.realpath(
        "/opt/msixd/bin/python3"
    )


def test_msixctl_runs_for_a_member_of_msixd(users: dict[str, list[str]]) -> None:
    done = system.msixctl("status", user="reader")
    assert done.rc == 0, str(done)


def test_modules_msixd_needs_are_loaded_before_it_starts() -> None:
    """DeviceAllow=char-vfio is resolved from /proc/devices when the unit starts: vfio must be there by then.

    The kernel says when vfio came (its version line), systemd when it first started msixd in this boot.
    """
    entries = [json.loads(line) for line in system.must(system.run(
        ["journalctl", "-b", "-o", "json", "--no-pager", "_TRANSPORT=kernel", "+", "UNIT=msixd.service"]
    )).out.splitlines()]

    def first(text: str) -> float:
        for entry in entries:
            if text in str(entry.get("MESSAGE", "")):
                return int(entry.get("_SOURCE_MONOTONIC_TIMESTAMP") or entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        raise AssertionError(f"no {text!r} in this boot's journal")

    assert first("VFIO - User Level meta-driver") < first("Starting msixd.service")
    assert "systemd-modules-load.service" in system.unit_property("After").split()
