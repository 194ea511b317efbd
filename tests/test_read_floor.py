"""msixd reads what its answers need and nothing more: the same file operations as the floor
(bench/floor.py, the fewest reads the kernel requires), on every captured tree.

The floor is also what the benchmarks measure msixd against, so these tests
keep that comparison honest both ways: a read msixd adds shows up here, and so
does a read the floor leaves out that an answer needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench import floor
from msixd.kernel import files
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory
from tests.fixturetree import fixture_names
from tests.readops import recording, tally

TREES = fixture_names()


def bdfs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "sys/bus/pci/devices").iterdir())


@pytest.mark.parametrize("name", TREES)
def test_get_device_reads_what_the_floor_reads(tree: Callable[[str], Path], name: str) -> None:
    roots = KernelRoots.under(tree(name))
    inventory = Inventory(roots)
    minimal = floor.Floor(roots)
    for bdf in bdfs(roots.sysfs.parent):
        with recording(files) as cold:
            inventory.get_device(bdf)
        with recording(floor) as cold_floor:
            minimal.device(bdf)
        # A first answer reads the fixed facts too; msixd stats the directory once more after
        # them, to remember them only if the device was not replaced meanwhile.
        extra = tally(cold.operations) - tally(cold_floor.operations)
        assert list(extra.elements()) == [("stat", str(roots.sysfs / "bus/pci/devices" / bdf))], bdf
        assert not tally(cold_floor.operations) - tally(cold.operations), bdf
        with recording(files) as warm:
            inventory.get_device(bdf)
        with recording(floor) as warm_floor:
            minimal.device(bdf)
        assert tally(warm.operations) == tally(warm_floor.operations), bdf
        assert not any(op[1].endswith(("/vendor", "/class")) for op in warm.operations), "remembered"


@pytest.mark.parametrize("name", TREES)
def test_a_listing_with_vectors_reads_what_the_floor_reads(tree: Callable[[str], Path], name: str) -> None:
    roots = KernelRoots.under(tree(name))
    inventory = Inventory(roots)
    minimal = floor.Floor(roots)
    inventory.list_devices(include_vectors=True)
    minimal.inventory()
    with recording(files) as msixd:
        inventory.list_devices(include_vectors=True)
    with recording(floor) as least:
        minimal.inventory()
    assert tally(msixd.operations) == tally(least.operations)


def test_config_space_is_read_where_the_answer_needs_it(host_roots: KernelRoots) -> None:
    """Message Control alone on every answer; the capability walk once (pci-sysfs.c reads
    config space a dword at a time, each one an access to the device)."""
    inventory = Inventory(host_roots)
    config = str(host_roots.sysfs / "bus/pci/devices/0000:00:01.0/config")
    with recording(files) as first:
        inventory.get_device("0000:00:01.0")
    walk = [op[2:] for op in first.operations if op[:2] == ("pread", config)]
    # Status, the capability pointer, each capability's ID and next, the Table and PBA registers, Message Control
    assert walk[:2] == [(2, 0x06), (1, 0x34)]
    assert walk[-2:] == [(8, 0x98 + 4), (2, 0x98 + 2)]
    assert all(size <= 2 for size, _ in walk[2:-2])
    assert not [op for op in first.operations if op == ("read", config)], "the file is never read whole"
    with recording(files) as again:
        inventory.get_device("0000:00:01.0")
    assert [op for op in again.operations if op[1] == config] == [("open", config), ("pread", config, 2, 0x98 + 2)]
