"""A restart through systemd's file descriptor store, on the fake kernel: two msixd in turn, in this process.

The fake systemd keeps what the first one stores; the first "exits" (its own
descriptors close, the store's copies stay, as when the process ends); the
second adopts what the store hands back. The fake kernel closes a device only
at the last close of its file, as the kernel does, so a device whose files
the store holds stays enabled. tests/vm proves the same on real kernels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msixctl.lease import request_lease
from msixd.kernel import pci
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.gateway import Limits
from msixd.rpc.leaseserve import LeaseServer
from msixd.service.adopt import Adopter, Adoption
from msixd.service.fdstore import FdStore, device_name
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fakesystemd import FakeSystemd
from tests.fixturetree import move_to_vfio
from tests.robustness.hostile import wait_until

BDF = "0000:00:03.0"


class Generation:
    """One msixd: its services on the fake kernel, its store the fake systemd's."""

    def __init__(self, roots: KernelRoots, state: Path, fake: FakeVfio, handed: list[tuple[str, int]],
                 lease_socket: Path | None = None) -> None:
        self.fake = fake
        self.store = FdStore.from_environment(handed)
        self.services = Services.build(roots, state, vfio_api=fake, store=self.store)  # type: ignore[arg-type]
        self.owner = self.services.owner
        self.lease_server: LeaseServer | None = None
        if lease_socket is not None:
            self.lease_server = LeaseServer(lease_socket, self.services.leases,
                                            Access(PeerRegistry(), "msixd", "msixd-admin"), Limits(),
                                            store=self.store)
        self.adoption: Adoption = Adopter(roots, self.owner, self.services.leases, self.store, vfio=fake).adopt(handed)
        if self.lease_server is not None:
            for adopted in self.adoption.leases:
                self.lease_server.adopt(adopted.lease, adopted.connection)
        self.restored = self.owner.restore()  # before the lease server starts, as in msixd.main.Daemon.start
        if self.lease_server is not None:
            self.lease_server.start()

    def exit(self) -> None:
        """msixd stops with the store in use: counts saved, then every descriptor of its own closes."""
        if self.lease_server is not None:
            self.lease_server.stop(keep_leases=True)
        self.owner.suspend()
        for device in list(self.owner._devices.values()):  # noqa: SLF001 - what a process exit closes
            for fd in device.eventfds.values():
                os.close(fd)
            if device.request_fd >= 0:
                os.close(device.request_fd)
            self.fake.close(device.device_fd)
        for group in self.owner._sessions._groups.values():  # noqa: SLF001
            self.fake.close(group.group_fd)
            self.fake.close(group.container_fd)
        if self.store._memory is not None:  # noqa: SLF001
            os.close(self.store._memory)  # noqa: SLF001


@pytest.fixture
def world(tree: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[KernelRoots, FakeVfio, FakeSystemd]]:
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    roots = KernelRoots.under(root)
    device = pci.read_device(roots, BDF)
    assert device is not None and device.msix is not None
    config = (root / "sys/bus/pci/devices" / BDF / "config").read_bytes()
    fake = FakeVfio({BDF: FakeDevice(table_size=device.msix.table_size, dynamic=True, config=config)},
                    sysfs=root / "sys")
    systemd = FakeSystemd(tmp_path)
    for key, value in systemd.env().items():
        monkeypatch.setenv(key, value)
    yield roots, fake, systemd
    systemd.close()


def stored(systemd: FakeSystemd, name: str) -> int:
    return dict(systemd.store)[name]


def test_a_restart_adopts_every_vector_and_loses_no_interrupt(world: tuple[KernelRoots, FakeVfio, FakeSystemd],
                                                              tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 3)
    for _ in range(3):
        first.owner.trigger(BDF, 0)
    device = stored(systemd, device_name(BDF))
    fake.msix_trigger(device, 1)  # interrupts msixd has not read yet
    fake.msix_trigger(device, 1)
    ids = dict(fake.devices[BDF].ids)
    systemd.wait_for(lambda s: sum(n.startswith("v-") for n in s.names()) == 3, what="three eventfds stored")
    first.exit()
    assert fake.devices[BDF].enabled, "the store's copies keep the device open: MSI-X stays on"
    fake.msix_trigger(device, 2)  # an interrupt while no msixd runs
    calls = len(fake.calls)

    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback())
    assert second.adoption.devices == [BDF] and not second.adoption.refused
    assert second.restored == {BDF: ""}
    assert fake.calls[calls:] == [], "nothing was re-installed, disabled or resized"
    assert fake.devices[BDF].ids == ids, "the kernel signals the same eventfds"
    assert second.owner.counts(BDF) == {0: 3, 1: 2, 2: 1}, "counted before, meanwhile, and not yet read"
    second.owner.trigger(BDF, 2)
    assert second.owner.counts(BDF)[2] == 2


def test_systemctl_stop_closes_the_store_and_the_kernel_disables_msix(
        world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 2)
    first.exit()
    assert fake.devices[BDF].enabled
    systemd.flush()
    fake.settle()
    assert not fake.devices[BDF].enabled and fake.open_fds == 0 and not fake.open_groups


def test_a_device_that_does_not_check_out_is_closed_and_opened_again(
        world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 2)
    first.exit()
    config = bytearray(fake.devices[BDF].config)
    config[0:2] = b"\x86\x80"  # another vendor now answers through that file
    fake.devices[BDF].config = bytes(config)
    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback())
    assert second.adoption.devices == [] and "another device's" in second.adoption.refused[BDF]
    assert second.restored == {BDF: ""}, "restored from the state file, as without systemd"
    assert ("msix_set_triggers", (0, list(second.owner.owned(BDF).eventfds.values()))) in fake.calls  # type: ignore[union-attr]
    systemd.wait_for(lambda s: s.names().count(device_name(BDF)) == 1 and sum(n.startswith("v-") for n in s.names())
                     == 2, what="the old files removed, the new ones stored")


def test_stray_files_are_closed_and_removed_from_the_store(world: tuple[KernelRoots, FakeVfio, FakeSystemd],
                                                           tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 2)
    device = stored(systemd, device_name(BDF))
    # A crash in the middle of a grow: the kernel has a trigger on vector 2 whose eventfd nobody
    # stored, and an eventfd stored for vector 5 has no trigger; a newer msixd's file too.
    orphan, unused, unknown = os.eventfd(0), os.eventfd(0), os.eventfd(0)
    fake.msix_set_triggers(device, 2, [orphan])
    first.store.keep("v-0000-00-03.0-5-abcdef", unused)
    first.store.keep("x-from-a-newer-msixd", unknown)
    for fd in (orphan, unused, unknown):
        os.close(fd)
    systemd.wait_for(lambda s: "x-from-a-newer-msixd" in s.names())
    first.exit()
    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback())
    assert second.adoption.devices == [BDF]
    systemd.wait_for(lambda s: "x-from-a-newer-msixd" not in s.names() and "v-0000-00-03.0-5-abcdef" not in s.names(),
                     what="the strays removed from the store")
    assert sorted(fake.devices[BDF].triggers) == [0, 1], "the saved state has 2 vectors: the orphan went"
    second.owner.trigger(BDF, 1)
    assert second.owner.counts(BDF)[1] == 1


def test_of_two_eventfds_stored_for_a_vector_the_one_the_kernel_signals_is_kept(
        world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 1)
    device = stored(systemd, device_name(BDF))
    # A crash while vector 0 got a fresh eventfd: the new one stored and installed, the old not yet removed.
    fresh = os.eventfd(0)
    first.store.keep("v-0000-00-03.0-0-f00d00", fresh)
    fake.msix_set_triggers(device, 0, [fresh])
    installed = fake.devices[BDF].ids[0]
    os.close(fresh)
    fake.msix_trigger(device, 0)
    first.exit()
    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback())
    assert second.adoption.devices == [BDF] and fake.devices[BDF].ids[0] == installed
    systemd.wait_for(lambda s: sum(n.startswith("v-0000-00-03.0-0-") for n in s.names()) == 1,
                     what="the other one removed from the store")
    assert second.owner.counts(BDF) == {0: 1}, "the interrupt on the installed one, not the check's"


def test_leases_survive_and_end_when_their_holder_leaves(world: tuple[KernelRoots, FakeVfio, FakeSystemd],
                                                         tmp_path: Path) -> None:
    roots, fake, systemd = world
    lease_socket = tmp_path / "msixd-lease.sock"
    first = Generation(roots, tmp_path / "state.json", fake, [], lease_socket)
    first.owner.enable(BDF, 2)
    held = request_lease(BDF, vectors="1", socket_path=str(lease_socket))
    systemd.wait_for(lambda s: f"l-{held.id}" in s.names(), what="the lease's connection stored")
    first.exit()
    assert held.revoked(timeout=0.2) is None, "the connection stays open in the store"
    device = stored(systemd, device_name(BDF))
    fake.msix_trigger(device, 1)
    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback(), lease_socket)
    assert [lease.id for lease in second.services.leases.list()] == [held.id]
    assert second.owner.leases(BDF)[1].uid == os.getuid()
    fake.msix_trigger(device, 1)
    assert os.eventfd_read(held.eventfds[0]) == 2, "the holder counted across the restart"
    held.close()
    wait_until(lambda: not second.services.leases.list(), 10, "the lease ended when its holder left")
    systemd.wait_for(lambda s: f"l-{held.id}" not in s.names(), what="its connection removed from the store")
    assert second.lease_server is not None
    second.lease_server.stop()


def test_a_lease_whose_holder_left_during_the_restart_ends(world: tuple[KernelRoots, FakeVfio, FakeSystemd],
                                                           tmp_path: Path) -> None:
    roots, fake, systemd = world
    lease_socket = tmp_path / "msixd-lease.sock"
    first = Generation(roots, tmp_path / "state.json", fake, [], lease_socket)
    first.owner.enable(BDF, 2)
    held = request_lease(BDF, vectors="0", socket_path=str(lease_socket), on_return="release")
    systemd.wait_for(lambda s: f"l-{held.id}" in s.names())
    first.exit()
    held.close()
    second = Generation(roots, tmp_path / "state.json", fake, systemd.handback(), lease_socket)
    wait_until(lambda: not second.services.leases.list(), 10, "the lease ended")
    assert sorted(fake.devices[BDF].triggers) == [1], "released, as the lease asked"
    assert second.lease_server is not None
    second.lease_server.stop()


def test_without_systemd_nothing_is_stored_and_stop_disables_as_before(
        world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots, fake, systemd = world
    monkeypatch.delenv("NOTIFY_SOCKET")
    first = Generation(roots, tmp_path / "state.json", fake, [])
    assert not first.store.active
    first.owner.enable(BDF, 2)
    first.owner.trigger(BDF, 0)
    first.owner.close_all()
    assert systemd.names() == [] and systemd.messages == [], "not one datagram to systemd"
    assert not fake.devices[BDF].enabled and fake.open_fds == 0


def test_a_store_of_size_0_is_no_store(world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    roots, fake, systemd = world
    monkeypatch.setenv("MSIXD_FDSTORE", "0")
    monkeypatch.delenv("FDSTORE", raising=False)
    first = Generation(roots, tmp_path / "state.json", fake, [])
    assert not first.store.active
    first.owner.enable(BDF, 1)
    assert systemd.names() == []


def test_what_msixd_closes_leaves_the_store(world: tuple[KernelRoots, FakeVfio, FakeSystemd], tmp_path: Path) -> None:
    roots, fake, systemd = world
    first = Generation(roots, tmp_path / "state.json", fake, [])
    first.owner.enable(BDF, 3)
    systemd.wait_for(lambda s: sum(n.startswith("v-") for n in s.names()) == 3, what="three eventfds stored")
    assert {"c-7", "g-7", device_name(BDF), "r-0000-00-03.0", "runtime"} <= set(systemd.names())
    first.owner.disable(BDF, 2)
    systemd.wait_for(lambda s: sorted(n.split("-")[4] for n in s.names() if n.startswith("v-")) == ["0", "1"],
                     what="vector 2's eventfd removed (FDSTOREREMOVE)")
    first.owner.disable(BDF)
    systemd.wait_for(lambda s: s.names() == ["runtime"], what="every file of the device and its group removed")
    assert any(message.get("FDSTOREREMOVE") == "1" for message in systemd.messages)
