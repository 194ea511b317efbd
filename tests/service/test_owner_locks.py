"""The Owner's lock order, tried from both directions at once with the fake VFIO.

Calls take a device's lock and then the tables'; the kernel's requests for a
device back (unbind, hot removal) and shutdown come the other way. Each test
stops one thread at the exact point where the other could cross it, then lets
it go: a lock order that deadlocks hangs both for good, and the join fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from msixd.kernel import irq as kirq
from msixd.kernel.roots import KernelRoots
from msixd.service.owner import Owner
from msixd.service.services import Services
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio

BDF = "0000:00:03.0"  # IRQs 37-39 in the captured tree are its vectors 0-2


@pytest.fixture
def roots(tree: Callable[[str], Path]) -> KernelRoots:
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    return KernelRoots.under(root)


class Gate:
    """Stops a fake VFIO call until the test opens the gate; says when a thread is held there."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any) -> Any:
            self.reached.set()
            assert self.opened.wait(10), "the test never opened the gate"
            return call(*args)

        return held


class WatchedLock:
    """A lock that records which threads have acquired it."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.taken_by: set[str] = set()
        self.taken = threading.Condition()

    def __enter__(self) -> bool:
        self._lock.acquire()
        with self.taken:
            self.taken_by.add(threading.current_thread().name)
            self.taken.notify_all()
        return True

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._lock.acquire(*args, **kwargs))

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def wait_taken_by(self, name: str, timeout: float = 10) -> None:
        with self.taken:
            assert self.taken.wait_for(lambda: name in self.taken_by, timeout), f"{name} never took the lock"


def start(name: str, target: Callable[[], object]) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as err:  # noqa: BLE001 - reported by finish()
            errors.append(err)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def finish(*threads: threading.Thread, timeout: float = 10) -> None:
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), f"{thread.name} is stuck: the locks deadlocked"
        assert not thread.errors, thread.errors  # type: ignore[attr-defined]


@contextmanager
def watched_tables(owner: Owner) -> Iterator[WatchedLock]:
    watched = WatchedLock(owner._lock)
    owner._lock = watched  # type: ignore[assignment]
    yield watched


def test_a_release_request_during_a_resize_does_not_deadlock(roots: KernelRoots, tmp_path: Path) -> None:
    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=True)})
    owner = Owner(roots, StateStore(tmp_path / "state.json"), vfio=fake)  # type: ignore[arg-type]
    owner.enable(BDF, 4)
    gate = Gate()
    fake.msix_set_triggers = gate.wrap(fake.msix_set_triggers)  # type: ignore[method-assign]
    with watched_tables(owner) as tables:
        resize = start("resize", lambda: owner.enable(BDF, 8))  # holds the device lock, then records the state
        assert gate.reached.wait(10)
        fake.ask_back(BDF)  # the kernel wants the device back (an unbind)
        release = start("release", lambda: owner.handle_release_requests(timeout=5))
        tables.wait_taken_by("release")
        gate.opened.set()
        finish(resize, release)
    assert owner.owned(BDF) is None, "the kernel got its device back"


def test_shutdown_during_a_resize_does_not_deadlock(roots: KernelRoots, tmp_path: Path) -> None:
    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=True)})
    owner = Owner(roots, StateStore(tmp_path / "state.json"), vfio=fake)  # type: ignore[arg-type]
    owner.enable(BDF, 4)
    gate = Gate()
    fake.msix_set_triggers = gate.wrap(fake.msix_set_triggers)  # type: ignore[method-assign]
    with watched_tables(owner) as tables:
        resize = start("resize", lambda: owner.enable(BDF, 8))
        assert gate.reached.wait(10)
        shutdown = start("shutdown", owner.close_all)
        tables.wait_taken_by("shutdown")
        gate.opened.set()
        finish(resize, shutdown)
    assert not fake.devices[BDF].enabled


def test_a_placement_during_a_reenable_leaves_kernel_and_state_agreeing(
    roots: KernelRoots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without dynamic MSI-X, growing disables MSI-X and re-applies each vector's affinity.
    A placement of one of those vectors in flight meanwhile must not be undone behind the
    state's back (the kernel left on the old CPU while the state says the new one)."""
    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=False)})
    services = Services.build(roots, tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    services.owner.enable(BDF, 3)
    services.placement.set_affinity(BDF, 1, "0")
    writing, disabling = Gate(), Gate()
    real_write = kirq.write_affinity

    def write(*args: Any) -> None:
        if threading.current_thread().name == "place":
            writing.wrap(real_write)(*args)
        else:
            real_write(*args)

    monkeypatch.setattr(kirq, "write_affinity", write)
    fake.msix_disable = disabling.wrap(fake.msix_disable)  # type: ignore[method-assign]
    place = start("place", lambda: services.placement.set_affinity(BDF, 1, "1"))
    assert writing.reached.wait(10), "the placement reached its kernel write"
    grow = start("grow", lambda: services.owner.enable(BDF, 40))  # past the 3 allocated: a re-enable
    if disabling.reached.wait(2):
        # The re-enable runs beside the placement: let the placement land first, then the re-enable.
        writing.opened.set()
        place.join(10)
        disabling.opened.set()
    else:
        # The placement holds the device until it is done: the re-enable waits for it.
        writing.opened.set()
        disabling.opened.set()
    finish(grow, place)
    kernel = (Path(str(roots.procfs)) / "irq/38/smp_affinity_list").read_text().strip()
    recorded = services.owner.desired()[BDF].affinities[1]
    assert kernel == "1" and recorded == [1], f"kernel {kernel!r}, state {recorded}"


def test_the_keepers_release_handling_against_concurrent_calls(roots: KernelRoots, tmp_path: Path) -> None:
    """Many calls on the device while the kernel asks for it back, again and again: every call
    ends (applied or refused), and nothing hangs."""
    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=True)})
    owner = Owner(roots, StateStore(tmp_path / "state.json"), vfio=fake)  # type: ignore[arg-type]
    stop = threading.Event()

    def calls() -> None:
        count = 1
        while not stop.is_set():
            count = count % 16 + 1
            try:
                owner.enable(BDF, count)
                owner.counts(BDF)
                owner.trigger(BDF, 0)
            except Exception:  # noqa: BLE001 - refused because the device was taken back: fine
                pass

    def releases() -> None:
        while not stop.is_set():
            device = owner.owned(BDF)
            if device is not None and device.request_fd >= 0:
                try:
                    fake.ask_back(BDF)
                except OSError:  # released between the look and the ask
                    pass
            owner.handle_release_requests(timeout=0.01)

    workers = [start(f"calls-{n}", calls) for n in range(4)] + [start("releases", releases)]
    stop.wait(3)  # three seconds of both at once
    stop.set()
    finish(*workers)


def test_a_forced_resize_revoking_a_lease_while_its_holder_leaves_does_not_deadlock(
    roots: KernelRoots, tmp_path: Path,
) -> None:
    """A forced resize holds the device lock and reports the revocation to the table of leases;
    the holder leaving at the same moment ends the lease from the other side (the table first,
    then the device). Each is held at its crossing point, then let go."""
    import os

    from msixd.service.leases import Holder, LeaseRequest

    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=True)})
    services = Services.build(roots, tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    owner, leases = services.owner, services.leases
    owner.enable(BDF, 4)
    granted = leases.grant(Holder(0, 0, 1), True, LeaseRequest(BDF, vectors=frozenset({2, 3})))
    for fd in granted.fds:
        os.close(fd)
    gate = Gate()
    fake.msix_set_triggers = gate.wrap(fake.msix_set_triggers)  # type: ignore[method-assign]
    told: list[str] = []
    leases.notify = lambda lease, reason: told.append(lease)
    resize = start("resize", lambda: owner.enable(BDF, 3, force=True))  # removes vector 3: revokes
    assert gate.reached.wait(10)  # holds the device lock, installing a fresh eventfd for kept vector 2
    leaving = start("leaving", lambda: leases.end(granted.lease.id, "the holder closed its connection"))
    gate.opened.set()
    finish(resize, leaving)
    assert leases.list() == [] and owner.leases(BDF) == {}
    assert sorted(fake.devices[BDF].triggers) == [0, 1, 2]
