"""systemd/msixd.service: valid, and sandboxed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd/msixd.service"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify checks that ExecStart exists: point it at this checkout's entry point."""
    entry = Path(sys.executable).parent / "msixd"
    assert entry.exists(), "pip install -e . provides the msixd entry point"
    unit = tmp_path / "msixd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/msixd", str(entry)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_exposure_is_at_most_3() -> None:
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True, text=True)
    match = re.search(r"Overall exposure level for msixd.service: ([\d.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 3.0, done.stdout


def test_unit_is_notify_with_watchdog_and_the_directories() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "RuntimeDirectory=msixd", "StateDirectory=msixd",
                 "ConfigurationDirectory=msixd", "DeviceAllow=char-vfio rw", "CapabilityBoundingSet=CAP_SYS_ADMIN"):
        assert line in text
