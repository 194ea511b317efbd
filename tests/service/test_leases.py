"""Leases against the fake kernel (fast); tests/vm/test_leases.py proves them on real kernels."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from msixd.config import LeaseRule
from msixd.errors import FailedPrecondition, LeaseHeld, LeaseNotFound, LeaseNotPermitted
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory
from msixd.service.leases import Holder, Lease, LeaseRequest, Leases, Return
from msixd.service.owner import Owner
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio

BDF = "0000:00:03.0"  # a virtio-net device of the captured host: 1af4:1041
ADMIN = Holder(uid=0, gid=0, pid=100)
ALICE = Holder(uid=4242, gid=100, pid=200, groups=frozenset({100}))
BOB = Holder(uid=4243, gid=4243, pid=300)


@pytest.fixture
def roots(tree: Callable[[str], Path]) -> KernelRoots:
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    return KernelRoots.under(root)


class World:
    def __init__(self, roots: KernelRoots, tmp_path: Path, dynamic: bool = True) -> None:
        self.fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=dynamic)})
        self.owner = Owner(roots, StateStore(tmp_path / "state.json"), vfio=self.fake)  # type: ignore[arg-type]
        self.leases = Leases(roots, self.owner, rules=(LeaseRule((BDF,), uids=frozenset({4242})),),
                             clock=lambda: 1700000000.0)
        self.told: list[tuple[str, str]] = []
        self.leases.notify = lambda lease, reason: self.told.append((lease, reason))
        self.inventory = Inventory(roots, self.owner)
        self.held: list[int] = []

    def grant(self, holder: Holder, admin: bool = False, **request: object) -> tuple[str, list[int]]:
        granted = self.leases.grant(holder, admin, LeaseRequest(BDF, **request))  # type: ignore[arg-type]
        self.held += granted.fds
        return granted.lease.id, list(granted.fds)

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)


@pytest.fixture
def world(roots: KernelRoots, tmp_path: Path) -> World:
    world = World(roots, tmp_path)
    yield world  # type: ignore[misc]
    world.close()


def count(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def test_a_granted_user_gets_the_vectors_eventfds_and_msixd_stops_reading_them(world: World) -> None:
    world.owner.enable(BDF, 4)
    with capture_logs() as logs:
        lease, fds = world.grant(ALICE, vectors=frozenset({1, 2}))
    assert len(fds) == 2
    world.owner.trigger(BDF, 1)
    world.owner.trigger(BDF, 1)
    world.owner.trigger(BDF, 3)
    assert count(fds[0]) == 2, "the holder reads what VFIO signals on vector 1"
    assert world.owner.counts(BDF) == {0: 0, 3: 1}, "msixd reads only its own vectors"
    shown = {v.index: v for v in world.inventory.get_device(BDF).vectors}
    assert shown[1].lease is not None and shown[1].lease.uid == 4242 and shown[1].lease.lease == lease
    assert shown[0].lease is None
    grant = next(line for line in logs if line["event"] == "lease grant")
    assert grant["holder_uid"] == 4242 and grant["vectors"] == [1, 2] and grant["bdf"] == BDF


def test_who_may_lease_is_the_configurations(world: World) -> None:
    world.owner.enable(BDF, 4)
    with pytest.raises(LeaseNotPermitted, match="uid 4243 may not lease"):
        world.grant(BOB, vectors=frozenset({0}))
    with pytest.raises(LeaseNotPermitted, match="not its VFIO device file"):
        world.grant(ALICE, vectors=frozenset({0}), device_fd=True)
    _, fds = world.grant(BOB, admin=True, vectors=frozenset({0}), device_fd=True)
    assert len(fds) == 2, "an admin may have the device file"
    world.leases.rules = (LeaseRule(("1af4:1041",), gids=frozenset({100}), device_fd=True),)
    _, fds = world.grant(ALICE, vectors=frozenset({1}), device_fd=True)
    assert len(fds) == 2, "by vendor:device, for a group of the holder"


def test_a_held_vector_is_refused_naming_its_holder(world: World) -> None:
    world.owner.enable(BDF, 4)
    lease, _ = world.grant(ALICE, vectors=frozenset({0, 1}))
    with pytest.raises(LeaseHeld) as err:
        world.grant(BOB, admin=True, vectors=frozenset({1, 2}))
    assert f"vector 1 to uid 4242 (pid 200, lease {lease})" in str(err.value)
    assert "--force" not in str(err.value), "a lease client has nothing to force"
    _, fds = world.grant(BOB, admin=True, count=2)
    assert len(fds) == 2 and sorted(world.owner.leases(BDF)) == [0, 1, 2, 3], "count takes the free ones"


def test_ending_a_lease_gives_msixd_fresh_eventfds_or_releases(world: World) -> None:
    world.owner.enable(BDF, 4)
    kept, kept_fds = world.grant(ALICE, vectors=frozenset({0}))
    gone, _ = world.grant(ALICE, vectors=frozenset({3}), on_return=Return.RELEASE)
    old = world.fake.devices[BDF].ids[0]
    with capture_logs() as logs:
        world.leases.end(kept, "the holder closed its connection")
        world.leases.end(gone, "the holder closed its connection")
    assert world.leases.end(kept, "again") is None, "ending twice is nothing"
    assert world.fake.devices[BDF].ids[0] != old, "a fresh eventfd of msixd's"
    world.owner.trigger(BDF, 0)
    assert count(kept_fds[0]) == 0, "the holder's copy counts no more"
    assert world.owner.counts(BDF)[0] == 1, "msixd counts the vector again"
    assert sorted(world.fake.devices[BDF].triggers) == [0, 1, 2], "the released vector has no trigger"
    assert world.owner.desired()[BDF].vectors == 3
    assert [line["returned"] for line in logs if line["event"] == "lease return"] == [[0], [3]]
    assert world.leases.list() == []


def test_changing_a_leased_vector_is_refused_unless_forced(world: World) -> None:
    world.owner.enable(BDF, 4)
    lease, fds = world.grant(ALICE, vectors=frozenset({2, 3}))
    with pytest.raises(LeaseHeld, match=f"vectors 2,3 to uid 4242 \\(pid 200, lease {lease}\\)"):
        world.owner.enable(BDF, 2)
    with pytest.raises(LeaseHeld):
        world.owner.disable(BDF, 3)
    with pytest.raises(LeaseHeld):
        world.owner.disable(BDF)
    assert sorted(world.fake.devices[BDF].triggers) == [0, 1, 2, 3], "nothing changed"
    world.owner.disable(BDF, 3, force=True)
    assert world.told == [(lease, "releasing vector 3 was asked (forced)")]
    assert world.leases.list() == [] and world.leases.stats()[BDF].revoked == 1
    world.owner.trigger(BDF, 2)
    assert count(fds[0]) == 0 and world.owner.counts(BDF)[2] == 1, "the kept vector is msixd's, freshly"


def test_a_reenable_is_refused_while_leased_unless_forced(roots: KernelRoots, tmp_path: Path) -> None:
    world = World(roots, tmp_path, dynamic=False)
    try:
        world.owner.enable(BDF, 4)
        lease, fds = world.grant(ALICE, vectors=frozenset({0}))
        with pytest.raises(LeaseHeld, match="disables and re-enables MSI-X"):
            world.owner.enable(BDF, 8)
        with pytest.raises(LeaseHeld, match="disables and re-enables MSI-X"):
            world.grant(BOB, admin=True, vectors=frozenset({6}), grow=True)
        world.owner.enable(BDF, 8, force=True)
        assert world.told and world.told[0][0] == lease
        world.owner.trigger(BDF, 0)
        assert count(fds[0]) == 0 and world.owner.counts(BDF)[0] == 1
    finally:
        world.close()


def test_grow_enables_what_is_missing_and_opens_the_device(world: World) -> None:
    with pytest.raises(FailedPrecondition, match="msixd does not own"):
        world.grant(ALICE, vectors=frozenset({2}))
    _, fds = world.grant(ALICE, vectors=frozenset({2}), grow=True)
    assert sorted(world.fake.devices[BDF].triggers) == [0, 1, 2], "the set becomes 0..2, as Enable makes it"
    (lease,) = world.leases.list()
    assert lease.grown == (0, 1, 2) and lease.vectors == (2,)
    with pytest.raises(FailedPrecondition, match="ask with grow"):
        world.grant(ALICE, count=4)
    world.grant(ALICE, count=4, grow=True)
    assert sorted(world.owner.leases(BDF)) == [0, 1, 2, 3, 4]


def test_the_kernel_asking_for_the_device_back_revokes_its_leases(world: World) -> None:
    world.owner.enable(BDF, 2)
    lease, _ = world.grant(ALICE, count=1)
    world.fake.ask_back(BDF)
    assert [g.bdf for g in world.owner.handle_release_requests(timeout=1.0)] == [BDF]
    assert world.told == [(lease, "msixd released the device")]
    assert world.leases.list() == []


def test_an_admin_revokes_and_the_holder_is_told(world: World) -> None:
    world.owner.enable(BDF, 2)
    lease, _ = world.grant(ALICE, count=1)
    with pytest.raises(LeaseNotFound):
        world.leases.revoke("nosuchlease", "test", by="uid 0")
    with capture_logs() as logs:
        world.leases.revoke(lease, "maintenance", by="uid 0 (pid 1)")
    assert world.told == [(lease, "maintenance")]
    assert any(line["event"] == "lease revoke" and line["by"] == "uid 0 (pid 1)" for line in logs)
    stats = world.leases.stats()[BDF]
    assert (stats.granted, stats.held, stats.revoked) == (1, 0, 1)


def test_a_lease_is_listed_until_its_vectors_are_back(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees a lease gone from the list may rely on msixd holding its vectors again."""
    world.owner.enable(BDF, 4)
    ended, _ = world.grant(ALICE, vectors=frozenset({0}))
    revoked, _ = world.grant(ALICE, vectors=frozenset({1}))
    seen: dict[str, tuple[list[str], Lease | None, object]] = {}
    unlease = world.owner.unlease

    def watched(bdf: str, lease_id: str, release: bool) -> list[int]:
        seen[lease_id] = ([lease.id for lease in world.leases.list()], world.leases.get(lease_id),
                          world.leases.end(lease_id, "a second close while the first is under way"))
        return unlease(bdf, lease_id, release)

    monkeypatch.setattr(world.owner, "unlease", watched)
    world.leases.end(ended, "the holder closed its connection")
    world.leases.revoke(revoked, "maintenance", by="uid 0 (pid 1)")
    assert seen[ended][0] == [ended, revoked] and seen[revoked][0] == [revoked], "listed while its vectors return"
    assert seen[ended][1] is not None and seen[revoked][1] is not None, "and found by its id"
    assert seen[ended][2] is None and seen[revoked][2] is None, "ending twice at once is nothing"
    assert world.leases.list() == [] and not world.owner.leases(BDF)
    stats = world.leases.stats()[BDF]
    assert (stats.granted, stats.held, stats.revoked) == (2, 0, 1)
