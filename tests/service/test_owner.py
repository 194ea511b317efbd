"""The VFIO engine against the fake kernel (fast); tests/vm proves it on real kernels."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import FailedPrecondition, GroupHeld, InvalidArgument, VectorNotFound
from msixd.kernel import vfio as real_vfio
from msixd.kernel.roots import KernelRoots
from msixd.kernel.vfio import PartialAllocation
from msixd.service.binding import Binding
from msixd.service.keeper import Keeper
from msixd.service.owner import Owner, ResizePath
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio

BDF = "0000:00:03.0"


def test_fake_has_the_real_signatures() -> None:
    public = [n for n, f in inspect.getmembers(real_vfio, inspect.isfunction) if f.__module__ == real_vfio.__name__]
    for name in public:
        if name.startswith("_") or name == "error":
            continue
        fake = getattr(FakeVfio, name)
        real_params = list(inspect.signature(getattr(real_vfio, name)).parameters)
        assert list(inspect.signature(fake).parameters)[1:] == real_params, name


@pytest.fixture
def roots(tree: Callable[[str], Path]) -> KernelRoots:
    """The captured host with one virtio device moved to vfio-pci in IOMMU group 7."""
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    return KernelRoots.under(root)


def make_owner(roots: KernelRoots, tmp_path: Path, **device: object) -> tuple[Owner, FakeVfio]:
    fake = FakeVfio({BDF: FakeDevice(**{"table_size": 64, "dynamic": True, **device})})  # type: ignore[arg-type]
    return Owner(roots, StateStore(tmp_path / "state.json"), vfio=fake), fake  # type: ignore[arg-type]


def test_enable_then_grow_dynamically_touches_only_the_new_vectors(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path)
    assert owner.enable(BDF, 16) == (ResizePath.ENABLE, 0)
    first = dict(owner.owned(BDF).eventfds)  # type: ignore[union-attr]
    assert owner.enable(BDF, 40) == (ResizePath.DYNAMIC, 16)
    assert fake.calls[-1] == ("msix_set_triggers", (16, list(owner.owned(BDF).eventfds.values())[16:]))  # type: ignore[union-attr]
    assert {i: fd for i, fd in owner.owned(BDF).eventfds.items() if i < 16} == first  # type: ignore[union-attr]
    assert owner.enable(BDF, 8) == (ResizePath.SHRINK, 40)
    assert sorted(fake.devices[BDF].triggers) == list(range(8))
    assert owner.enable(BDF, 8) == (ResizePath.UNCHANGED, 8)


def test_grow_without_dynamic_msix_reenables_and_keeps_eventfds(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path, dynamic=False)
    owner.enable(BDF, 16)
    before = dict(owner.owned(BDF).eventfds)  # type: ignore[union-attr]
    assert owner.enable(BDF, 40) == (ResizePath.REENABLE, 16)
    assert ("msix_disable", ()) in fake.calls
    after = owner.owned(BDF).eventfds  # type: ignore[union-attr]
    assert {i: after[i] for i in range(16)} == before, "consumers keep their eventfds"
    assert sorted(fake.devices[BDF].triggers) == list(range(40))
    # Shrinking and growing back within what is allocated needs no re-enable.
    owner.enable(BDF, 8)
    assert owner.enable(BDF, 40)[0] is ResizePath.DYNAMIC


def test_partial_allocation_is_an_error_with_the_count(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path, capacity=12)
    with pytest.raises(PartialAllocation) as err:
        owner.enable(BDF, 16)
    assert (err.value.requested, err.value.available) == (16, 12)
    assert "only 12 of 16" in str(err.value)
    assert not fake.devices[BDF].enabled


def test_vector_count_out_of_range(roots: KernelRoots, tmp_path: Path) -> None:
    owner, _ = make_owner(roots, tmp_path, table_size=5)
    for bad in (0, 6):
        with pytest.raises(InvalidArgument, match="1 to 5"):
            owner.enable(BDF, bad)


def test_second_process_holding_the_group_is_named(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path)
    fake.open_groups.add(7)  # someone else has /dev/vfio/7 open
    with pytest.raises(GroupHeld, match="VFIO group 7"):
        owner.enable(BDF, 4)


def test_device_not_on_vfio_pci(roots: KernelRoots, tmp_path: Path) -> None:
    owner, _ = make_owner(roots, tmp_path)
    with pytest.raises(FailedPrecondition, match="msixctl bind 0000:00:01.0"):
        owner.enable("0000:00:01.0", 4)


def test_trigger_counts_and_disable_one_then_all(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 5)
    assert owner.trigger(BDF, 3) == (BDF, 1)
    assert owner.trigger(BDF[5:], 3) == (BDF, 2), "the BDF as msixd names it, whatever form it was given in"
    assert owner.counts(BDF)[3] == 2
    assert owner.disable(BDF, 2) == [2]
    assert sorted(fake.devices[BDF].triggers) == [0, 1, 3, 4]
    with pytest.raises(VectorNotFound):
        owner.trigger(BDF, 2)
    assert owner.disable(BDF) == [0, 1, 3, 4]
    assert owner.owned(BDF) is None and fake.open_fds == 0 and not fake.open_groups
    with pytest.raises(FailedPrecondition, match="does not own"):
        owner.trigger(BDF, 0)


def test_state_is_saved_and_restored(roots: KernelRoots, tmp_path: Path) -> None:
    owner, _ = make_owner(roots, tmp_path)
    owner.enable(BDF, 6)
    owner.remember_affinity(BDF, 3, frozenset({1}))
    owner.close_all()
    again, fake = make_owner(roots, tmp_path)
    assert again.desired()[BDF].vectors == 6 and again.desired()[BDF].affinities == {3: [1]}
    assert again.restore() == {BDF: ""}
    assert sorted(fake.devices[BDF].triggers) == list(range(6))


def test_close_all_leaves_nothing_open(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 8)
    owner.close_all()
    assert fake.open_fds == 0 and not fake.devices[BDF].enabled


def test_corrupt_state_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "devices": {"x": {"vec')
    assert StateStore(path).load() == {}
    assert not path.exists()
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.iterdir()] == ["state.json"]
    assert os.listdir(tmp_path)[0].startswith("state.json.corrupt-")


def test_a_failed_first_enable_leaves_nothing_owned(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path, table_size=5)
    with pytest.raises(InvalidArgument):
        owner.enable(BDF, 9)
    assert owner.owned(BDF) is None and fake.open_fds == 0 and not fake.open_groups
    assert BDF not in owner.desired()


def test_two_functions_of_one_group_share_its_files(roots: KernelRoots, tmp_path: Path) -> None:
    other = "0000:00:04.0"
    move_to_vfio(roots.sysfs.parent, other)
    fake = FakeVfio({BDF: FakeDevice(table_size=8, dynamic=True), other: FakeDevice(table_size=8, dynamic=True)})
    owner = Owner(roots, StateStore(tmp_path / "state.json"), vfio=fake)  # type: ignore[arg-type]
    owner.enable(BDF, 2)
    owner.enable(other, 3)  # the group is open already: no EBUSY from ourselves
    owner.disable(BDF)
    assert fake.open_groups == {7}, "still in use by the other function"
    owner.disable(other)
    assert fake.open_groups == set() and fake.open_fds == 0


def test_noiommu_group_uses_the_noiommu_container(roots: KernelRoots, tmp_path: Path) -> None:
    name = roots.sysfs / "kernel/iommu_groups/7/name"
    name.parent.mkdir(parents=True)
    name.write_text("vfio-noiommu\n")
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 2)
    assert fake.noiommu_groups == {7}
    assert ("set_iommu", (real_vfio.VFIO_NOIOMMU_IOMMU,)) in fake.calls


def _keeper(roots: KernelRoots, owner: Owner) -> Keeper:
    return Keeper(roots, owner, Binding(roots, owner))


def test_removed_device_is_released_then_taken_back_when_it_returns(roots: KernelRoots, tmp_path: Path) -> None:
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 4)
    owner.remember_affinity(BDF, 1, frozenset({1}))
    keeper = _keeper(roots, owner)
    fake.ask_back(BDF)  # what `echo 1 > .../remove` does first
    keeper.released(owner.handle_release_requests(timeout=1))
    assert owner.owned(BDF) is None and fake.open_fds == 0 and not fake.open_groups, "released at once"
    device = roots.sysfs / "bus/pci/devices" / BDF
    device.rename(device.with_name("gone"))  # removed
    keeper.step()
    assert owner.owned(BDF) is None
    device.with_name("gone").rename(device)  # rescanned, and on vfio-pci again
    keeper.step()
    assert owner.owned(BDF) is not None and sorted(fake.devices[BDF].triggers) == [0, 1, 2, 3]
    assert owner.desired()[BDF].affinities == {1: [1]}


def test_device_removed_and_found_again_between_two_looks_is_taken_back(
    roots: KernelRoots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel removes and a rescan re-creates the device before the keeper looks: its new
    sysfs directory (a new identity) is what tells a removal from an unbind, not absence."""
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 3)
    keeper = _keeper(roots, owner)
    fake.ask_back(BDF)
    keeper.released(owner.handle_release_requests(timeout=1))
    device = roots.sysfs / "bus/pci/devices" / BDF
    shutil.copytree(device, tmp_path / "again", symlinks=True)
    device.rename(tmp_path / "old")  # kept, so its inode cannot be reused by the new one
    (tmp_path / "again").rename(device)
    monkeypatch.setattr("msixd.service.keeper.REMOVAL_GRACE_SECONDS", 0.0)  # would call it unbound
    keeper.step()
    assert owner.owned(BDF) is not None and sorted(fake.devices[BDF].triggers) == [0, 1, 2]


def test_unbound_device_is_released_and_left_alone(
    roots: KernelRoots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, fake = make_owner(roots, tmp_path)
    owner.enable(BDF, 2)
    keeper = _keeper(roots, owner)
    fake.ask_back(BDF)  # an operator's unbind: the device stays
    keeper.released(owner.handle_release_requests(timeout=1))
    assert owner.owned(BDF) is None
    monkeypatch.setattr("msixd.service.keeper.REMOVAL_GRACE_SECONDS", 0.0)
    keeper.step()
    keeper.step()
    assert owner.owned(BDF) is None
    keeper.step()
    assert owner.owned(BDF) is None, "not taken back"


def test_get_device_carries_each_owned_vectors_eventfd_count_live(roots: KernelRoots, tmp_path: Path) -> None:
    from msixd.service.inventory import Inventory

    owner, _ = make_owner(roots, tmp_path)
    owner.enable(BDF, 5)
    inventory = Inventory(roots, owner)
    owner.trigger(BDF, 1)
    first = inventory.get_device(BDF)
    assert first.ownership is not None and first.ownership.vectors_enabled == 5
    assert {v.index: v.eventfd_count for v in first.vectors} == {0: 0, 1: 1, 2: 0}
    owner.trigger(BDF, 1)
    owner.trigger(BDF, 2)
    assert {v.index: v.eventfd_count for v in inventory.get_device(BDF).vectors} == {0: 0, 1: 2, 2: 1}
