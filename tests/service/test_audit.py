"""Changes msixd makes on its own leave an audit line too, saying msixd made them and why."""

from __future__ import annotations

import shutil
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from msixd.kernel.roots import KernelRoots
from msixd.service.binding import Binding
from msixd.service.keeper import Keeper
from msixd.service.owner import Owner
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio

BDF = "0000:00:03.0"


def audit_lines(events: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e.get("logger") == "msixd.audit"]


@pytest.fixture
def roots(tree: Callable[[str], Path]) -> KernelRoots:
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    return KernelRoots.under(root)


def owner_and_fake(roots: KernelRoots, state: Path) -> tuple[Owner, FakeVfio]:
    fake = FakeVfio({BDF: FakeDevice(table_size=16, dynamic=True)})
    return Owner(roots, StateStore(state), vfio=fake), fake  # type: ignore[arg-type]


def test_restore_at_start_is_audited(
    roots: KernelRoots, tmp_path: Path, logged: list[MutableMapping[str, Any]]
) -> None:
    first, _ = owner_and_fake(roots, tmp_path / "state.json")
    first.enable(BDF, 3)
    first.remember_affinity(BDF, 1, frozenset({1}))
    first.close_all()
    logged.clear()
    again, _ = owner_and_fake(roots, tmp_path / "state.json")
    assert again.restore() == {BDF: ""}
    assert audit_lines(logged) == [{
        "event": "restore", "bdf": BDF, "vectors": 3, "affinities": {1: [1]}, "by": "msixd",
        "reason": "re-applying the saved state at start", "logger": "msixd.audit", "log_level": "info",
    }]


def test_a_restore_that_fails_changes_nothing_and_is_not_audited(roots: KernelRoots, tmp_path: Path,
                                                                 logged: list[MutableMapping[str, Any]]) -> None:
    first, _ = owner_and_fake(roots, tmp_path / "state.json")
    first.enable(BDF, 3)
    first.close_all()
    again, fake = owner_and_fake(roots, tmp_path / "state.json")
    fake.open_groups.add(7)  # someone else holds the group now
    logged.clear()
    assert "held" in again.restore()[BDF]
    assert audit_lines(logged) == []


def test_release_when_the_kernel_asks_and_taking_back_are_audited(
    roots: KernelRoots, tmp_path: Path, logged: list[MutableMapping[str, Any]]
) -> None:
    owner, fake = owner_and_fake(roots, tmp_path / "state.json")
    owner.enable(BDF, 4)
    keeper = Keeper(roots, owner, Binding(roots, owner))
    logged.clear()
    fake.ask_back(BDF)
    keeper.released(owner.handle_release_requests(timeout=1))
    assert audit_lines(logged) == [{
        "event": "release", "bdf": BDF, "vectors_released": 4, "by": "msixd",
        "reason": "the kernel asked for the device back (an unbind, or its removal)",
        "logger": "msixd.audit", "log_level": "info",
    }]
    device = roots.sysfs / "bus/pci/devices" / BDF
    shutil.copytree(device, tmp_path / "again", symlinks=True)
    device.rename(tmp_path / "old")  # removed...
    keeper.step()
    (tmp_path / "again").rename(device)  # ...and found again by a rescan
    logged.clear()
    keeper.step()
    assert owner.owned(BDF) is not None
    assert audit_lines(logged) == [{
        "event": "take back", "bdf": BDF, "vectors": 4, "affinities": {}, "by": "msixd",
        "reason": "the device was removed and found again (a rescan or a re-plug)",
        "logger": "msixd.audit", "log_level": "info",
    }]


def test_binding_a_returned_device_again_is_audited(
    roots: KernelRoots, tmp_path: Path, logged: list[MutableMapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device msixd had bound comes back on its old driver: msixd binds it to vfio-pci again, and says so."""
    owner, fake = owner_and_fake(roots, tmp_path / "state.json")
    owner.remember_driver(BDF, "virtio-pci")
    owner.enable(BDF, 2)
    keeper = Keeper(roots, owner, Binding(roots, owner))
    fake.ask_back(BDF)
    keeper.released(owner.handle_release_requests(timeout=1))
    device = roots.sysfs / "bus/pci/devices" / BDF
    device.rename(tmp_path / "gone")
    keeper.step()
    (tmp_path / "gone").rename(device)
    (device / "driver").unlink()
    (device / "driver").symlink_to("../../../bus/pci/drivers/virtio-pci")  # probed by its old driver
    bound: list[str] = []

    def bind(self: Binding, bdf: str) -> None:  # what the kernel does with msixd's sysfs writes
        bound.append(bdf)
        (device / "driver").unlink()
        (device / "driver").symlink_to("../../../bus/pci/drivers/vfio-pci")

    monkeypatch.setattr(Binding, "bind", bind)
    logged.clear()
    keeper.step()
    assert bound == [BDF]
    assert [(e["event"], e["by"]) for e in audit_lines(logged)] == [("bind", "msixd"), ("take back", "msixd")]
