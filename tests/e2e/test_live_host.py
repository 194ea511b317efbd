"""What the README promises of `msixctl list` and `show`, on the machine the tests run on (read-only).

msixd serves this host's real /sys and /proc; msixctl's JSON must agree with
`lspci -vv` (table size, enable) and with /proc/interrupts and /proc/irq.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.kernel.cpulist import parse_cpulist
from tests import truth
from tests.e2e.conftest import msixctl_json

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="reads a live Linux /sys"),
    pytest.mark.skipif(os.geteuid() != 0, reason="full PCI config space is only readable as root"),
]

_MSIX = re.compile(r"MSI-X: Enable([+-]) Count=(\d+) Masked([+-])")


def lspci_msix() -> dict[str, tuple[int, bool, bool]]:
    if shutil.which("lspci") is None:
        if os.environ.get("CI"):
            pytest.fail("lspci is missing: tests/run installs pciutils")
        pytest.skip("lspci (pciutils) is not installed")
    out = subprocess.run(["lspci", "-D", "-vv"], capture_output=True, text=True, check=True).stdout
    found = {}
    for block in out.split("\n\n"):
        match = _MSIX.search(block)
        if block.strip() and match:
            bdf = block.split()[0]
            found[bdf] = (int(match.group(2)), match.group(1) == "+", match.group(3) == "+")
    return found


def test_list_matches_lspci(msixd: Callable[..., Path]) -> None:
    expected = lspci_msix()
    assert expected, "this host has virtio devices with MSI-X: lspci should show them"
    listing = msixctl_json(msixd(), "list")["devices"]
    got = {
        d["bdf"]: (d["msix"]["table_size"], d["msix"]["enabled"], d["msix"]["function_masked"])
        for d in listing
        if d["msix_probe"] == "MSIX_PROBE_PRESENT"
    }
    assert got == expected


def test_show_matches_proc(msixd: Callable[..., Path]) -> None:
    socket_path = msixd()
    procfs = Path("/proc")
    for bdf, count in truth.msix_devices(Path("/sys")).items():
        device = msixctl_json(socket_path, "show", bdf)
        lines = truth.proc_interrupts(procfs)  # read after msixd: counts can only have grown
        assert len(device["vectors"]) == count
        for vector in device["vectors"]:
            irq = vector["irq"]
            assert irq in lines, f"IRQ {irq} of {bdf} is not in /proc/interrupts"
            line = lines[irq]
            assert line.chip == vector["chip"]
            assert line.hwirq_handler.split("-")[0] == str(vector["index"])
            assert sum(line.counts) >= int(vector["total_count"])
            affinity = parse_cpulist(Path(f"/proc/irq/{irq}/smp_affinity_list").read_text())
            assert set(vector["affinity"]) == affinity
