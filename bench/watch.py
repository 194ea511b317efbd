"""CPU time msixd spends counting interrupts, per million events, against a bare epoll loop.

Interrupts reach user space as eventfd increments (vfio_msihandler ->
eventfd_signal; a loopback trigger takes the same path). A separate writer
process makes EVENTS increments over VECTORS eventfds, so its own CPU time is
not counted. The consumer under test runs in this process, and its thread CPU
time is measured until it has counted every event:
- floor: epoll over the eventfds, one read per wake-up;
- msixd: the Owner's counting (Owner.counts, what Watch and GetDevice call),
  polled every INTERVAL seconds as `msixctl watch --interval` would.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import tempfile
import time
from pathlib import Path

from msixd.kernel.roots import KernelRoots
from msixd.service.owner import Owner
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio

EVENTS = 1_000_000
VECTORS = 8
INTERVAL = 0.1
BDF = "0000:00:03.0"


def writer(fds: list[int], events: int, go: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    go.wait()
    for n in range(events):
        os.eventfd_write(fds[n % len(fds)], 1)


def run_writer(fds: list[int]) -> multiprocessing.Process:
    go = multiprocessing.get_context("fork").Event()
    process = multiprocessing.get_context("fork").Process(target=writer, args=(fds, EVENTS, go))
    process.start()
    go.set()
    return process


def floor(fds: list[int]) -> float:
    poller = select.epoll()
    for fd in fds:
        poller.register(fd, select.EPOLLIN)
    process = run_writer(fds)
    started = time.thread_time()
    counted = 0
    while counted < EVENTS:
        for fd, _ in poller.poll():
            try:
                counted += os.eventfd_read(fd)
            except BlockingIOError:
                pass
    spent = time.thread_time() - started
    process.join()
    poller.close()
    return spent


def msixd_owner(root: Path) -> float:
    fake = FakeVfio({BDF: FakeDevice(table_size=64, dynamic=True)})
    owner = Owner(KernelRoots.under(root), StateStore(root / "state.json"), vfio=fake)  # type: ignore[arg-type]
    owner.enable(BDF, VECTORS)
    fds = list(fake.devices[BDF].triggers.values())
    process = run_writer(fds)
    started = time.thread_time()
    while sum(owner.counts(BDF).values()) < EVENTS:
        time.sleep(INTERVAL)
    spent = time.thread_time() - started
    process.join()
    owner.close_all()
    return spent


def run(root: Path) -> dict[str, float]:
    fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(VECTORS)]
    floor_s = floor(fds)
    for fd in fds:
        os.close(fd)
    msixd_s = msixd_owner(root)
    per_million = 1_000_000 / EVENTS
    result = {
        "events": EVENTS, "vectors": VECTORS, "interval_s": INTERVAL,
        "epoll_cpu_s_per_million": round(floor_s * per_million, 4),
        "msixd_cpu_s_per_million": round(msixd_s * per_million, 4),
        "ratio": round(msixd_s / floor_s, 3),
    }
    print(result, flush=True)
    return result


if __name__ == "__main__":
    from tests.fixturetree import materialise, move_to_vfio

    tree = materialise("host-6.18", Path(tempfile.mkdtemp()))
    move_to_vfio(tree, BDF)
    run(tree)
