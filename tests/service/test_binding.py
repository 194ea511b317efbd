"""Binding a device to vfio-pci and back, against a fake PCI bus over a captured guest."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import FailedPrecondition
from msixd.kernel.roots import KernelRoots
from msixd.service.binding import Binding
from msixd.service.owner import Owner
from msixd.service.state import StateStore
from tests.fakes.pcibus import FakePciBus

BDF = "0000:00:0c.0"  # the captured 6.12 guest's virtio-net, on virtio-pci


@pytest.fixture
def root(tree: Callable[[str], Path]) -> Path:
    return tree("guest-6.12")


def make(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded: set[str]) -> tuple[Binding, FakePciBus]:
    bus = FakePciBus(root, loaded, {BDF: "virtio-pci"}).install(monkeypatch)
    roots = KernelRoots.under(root)
    return Binding(roots, Owner(roots, StateStore(tmp_path / "state.json"))), bus


def saved(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "state.json"
    return json.loads(path.read_text())["devices"] if path.exists() else {}


def test_bind_hands_the_device_to_vfio_pci(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binding, bus = make(root, tmp_path, monkeypatch, {"virtio-pci", "vfio-pci"})
    bound = binding.bind(BDF)
    assert (bound.previous_driver, bound.driver) == ("virtio-pci", "vfio-pci")
    assert bus.driver_of(BDF) == "vfio-pci" and bus.override_of(BDF) == "vfio-pci"
    assert saved(tmp_path)[BDF]["previous_driver"] == "virtio-pci"  # type: ignore[index]


def test_bind_without_vfio_pci_puts_the_device_back(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vfio-pci not loaded: the override leaves the device with no driver; msixd must undo it."""
    binding, bus = make(root, tmp_path, monkeypatch, {"virtio-pci"})
    with pytest.raises(FailedPrecondition, match=r"vfio-pci did not take .*back on virtio-pci.*modprobe vfio-pci"):
        binding.bind(BDF)
    assert bus.driver_of(BDF) == "virtio-pci"
    assert bus.override_of(BDF) == "", "no driver_override is left behind"
    assert BDF not in saved(tmp_path), "a device that was never bound is not remembered"


def test_bind_failing_midway_puts_the_device_back(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses the probe after the unbind went through."""
    binding, bus = make(root, tmp_path, monkeypatch, {"virtio-pci", "vfio-pci"})
    real_write = bus.write
    probes = 0

    def first_probe_fails(path: str, text: str) -> None:
        nonlocal probes
        if path.endswith("/drivers_probe"):
            probes += 1
            if probes == 1:
                raise OSError(errno.ENOMEM, "Cannot allocate memory", path)
        real_write(path, text)

    monkeypatch.setattr("msixd.kernel.pcibind.write_text", first_probe_fails)
    with pytest.raises(FailedPrecondition, match=r"back on virtio-pci"):
        binding.bind(BDF)
    assert bus.driver_of(BDF) == "virtio-pci" and bus.override_of(BDF) == ""
    assert BDF not in saved(tmp_path)


def test_bind_says_when_the_device_cannot_be_put_back(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binding, bus = make(root, tmp_path, monkeypatch, {"virtio-pci"})
    bus.fail_on["drivers_probe"] = errno.EIO
    with pytest.raises(FailedPrecondition, match=r"could not be put back on virtio-pci \(driver now: none\)"):
        binding.bind(BDF)
    assert bus.driver_of(BDF) is None
    assert bus.override_of(BDF) == "", "the override is cleared even then, so a later probe finds its driver"
    assert saved(tmp_path)[BDF]["previous_driver"] == "virtio-pci", "release can still put it back"  # type: ignore[index]


def test_bind_refused_at_the_unbind_leaves_the_driver_alone(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binding, bus = make(root, tmp_path, monkeypatch, {"virtio-pci", "vfio-pci"})
    bus.fail_on["virtio-pci/unbind"] = errno.EBUSY
    with pytest.raises(FailedPrecondition, match=r"unbind from virtio-pci.*so it is back on virtio-pci"):
        binding.bind(BDF)
    assert bus.driver_of(BDF) == "virtio-pci" and bus.override_of(BDF) == ""
    assert [w for w, _ in bus.writes if w.endswith("unbind")] == ["sys/bus/pci/drivers/virtio-pci/unbind"]
