"""VFIO on a real kernel: msixd against a minimal direct-ioctl loop, in one bench guest.

    python -m tests.vm.bench --kernel 6.12 --out /tmp/b -- python -m bench.vfio --out /mnt/vfio.json

Run by bench/run in a 6.1 and a 6.12 guest. On the nvme (64 MSI-X entries, the
largest table the bench offers: a 2-CPU guest has room for a few hundred x86
vectors, so a bigger table could not be enabled whole anyway), for N = 8 and 64:

- enable: from a device nobody holds, open container, group and device, then
  one SET_IRQS with N eventfds (the floor is tests/vm/rawvfio: plain fcntl, no
  checks). msixd is measured in process (Owner.enable) and over gRPC (the
  Enable RPC, whose answer also carries the device's inventory);
- grow N/2 -> N and shrink N -> N/2 on an open device: the floor does what the
  kernel allows, one SET_IRQS for the new vectors where MSI-X is dynamic
  (6.12), disable and re-enable where it is not (6.1), and one SET_IRQS with
  fd -1 to shrink; msixd does the same and, on the re-enable path, also reads
  and writes back every vector's affinity. Every msixd change also saves the
  desired state durably (write, fsync, rename, fsync the directory) before it
  answers, so that a crash right after loses nothing: state_save_ms is that
  write alone, measured in the same guest.

Watch: CPU time to count loopback interrupts (SET_IRQS DATA_NONE|TRIGGER,
the kernel signals the vector's eventfd as a real MSI-X message would), per
million, msixd's counting (Owner.counts at a 0.1 s interval, as `msixctl
watch` polls) against a bare epoll loop over the same number of eventfds. A
forked writer raises the interrupts, so its CPU time is not counted.

Medians of REPEAT; milliseconds are this machine's only, the ratios carry over.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from msixd.service.state import DeviceState, StateStore
from tests.serving import serve
from tests.vm import guest, rawvfio

NVME = (0x1B36, 0x0010)
REPEAT = 15
WATCH_EVENTS = 100_000
WATCH_VECTORS = 8
WATCH_INTERVAL = 0.1


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def eventfds(n: int) -> list[int]:
    return [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(n)]


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Direct:
    """The floor: the fewest ioctls that do the job, on a device this process opens itself."""

    def __init__(self, bdf: str, group: int, dynamic: bool) -> None:
        self.bdf, self.group, self.dynamic = bdf, group, dynamic

    def enable(self, n: int) -> float:
        fds = eventfds(n)
        started = time.perf_counter()
        opened = rawvfio.open_device(self.bdf, self.group)
        assert rawvfio.msix_enable(opened.device, fds) == 0
        elapsed = time.perf_counter() - started
        rawvfio.msix_disable(opened.device)
        opened.close()
        close_all(fds)
        return elapsed

    def resize(self, n: int) -> tuple[float, float]:
        """(grow n/2 -> n, shrink n -> n/2) on an open device."""
        half = n // 2
        opened = rawvfio.open_device(self.bdf, self.group)
        fds = eventfds(n)
        try:
            rawvfio.msix_enable(opened.device, fds[:half])
            started = time.perf_counter()
            if self.dynamic:
                rawvfio.msix_set(opened.device, half, fds[half:])
            else:
                rawvfio.msix_disable(opened.device)
                rawvfio.msix_enable(opened.device, fds)
            grow = time.perf_counter() - started
            shrink = timed(lambda: rawvfio.msix_set(opened.device, half, [-1] * (n - half)))
            rawvfio.msix_disable(opened.device)
        finally:
            opened.close()
            close_all(fds)
        return grow, shrink


class Msixd:
    def __init__(self, services: Services, stub: msix_pb2_grpc.MsixServiceStub, bdf: str) -> None:
        self.owner, self.stub, self.bdf = services.owner, stub, bdf

    def enable(self, n: int) -> float:
        elapsed = timed(lambda: self.owner.enable(self.bdf, n))
        self.owner.disable(self.bdf)
        return elapsed

    def enable_rpc(self, n: int) -> float:
        elapsed = timed(lambda: self.stub.Enable(pb.EnableRequest(bdf=self.bdf, vectors=n)))
        self.stub.Disable(pb.DisableRequest(bdf=self.bdf))
        return elapsed

    def resize(self, n: int) -> tuple[float, float]:
        self.owner.enable(self.bdf, n // 2)
        grow = timed(lambda: self.owner.enable(self.bdf, n))
        shrink = timed(lambda: self.owner.enable(self.bdf, n // 2))
        self.owner.disable(self.bdf)
        return grow, shrink


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def measure_vectors(direct: Direct, msixd: Msixd, n: int) -> dict[str, float]:
    for _ in range(2):  # first calls load code paths and Python imports
        direct.enable(n), msixd.enable(n), msixd.enable_rpc(n), direct.resize(n), msixd.resize(n)
    floor_enable = median([direct.enable(n) for _ in range(REPEAT)])
    own_enable = median([msixd.enable(n) for _ in range(REPEAT)])
    rpc_enable = median([msixd.enable_rpc(n) for _ in range(REPEAT)])
    floor_resize = [direct.resize(n) for _ in range(REPEAT)]
    own_resize = [msixd.resize(n) for _ in range(REPEAT)]
    floor_grow, floor_shrink = median([g for g, _ in floor_resize]), median([s for _, s in floor_resize])
    store = StateStore(Path(tempfile.mkdtemp()) / "state.json")
    state = {msixd.bdf: DeviceState(vectors=n, affinities={i: [i % 2] for i in range(n)}, previous_driver="nvme")}
    save = median([timed(lambda: store.save(state)) for _ in range(REPEAT)])
    own_grow, own_shrink = median([g for g, _ in own_resize]), median([s for _, s in own_resize])
    return {
        "enable_direct_ms": round(floor_enable * 1e3, 3),
        "enable_msixd_ms": round(own_enable * 1e3, 3),
        "enable_msixd_grpc_ms": round(rpc_enable * 1e3, 3),
        "enable_ratio": round(own_enable / floor_enable, 2),
        "enable_grpc_ratio": round(rpc_enable / floor_enable, 2),
        "grow_direct_ms": round(floor_grow * 1e3, 3),
        "grow_msixd_ms": round(own_grow * 1e3, 3),
        "grow_ratio": round(own_grow / floor_grow, 2),
        "shrink_direct_ms": round(floor_shrink * 1e3, 3),
        "shrink_msixd_ms": round(own_shrink * 1e3, 3),
        "shrink_ratio": round(own_shrink / floor_shrink, 2),
        "state_save_ms": round(save * 1e3, 3),
    }


def _trigger_writer(device: int, vectors: int, events: int) -> None:
    for n in range(events):
        rawvfio.msix_trigger(device, n % vectors)


def start_writer(device: int) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(
        target=_trigger_writer, args=(device, WATCH_VECTORS, WATCH_EVENTS)
    )
    process.start()
    return process


def watch_floor(direct: Direct) -> float:
    opened = rawvfio.open_device(direct.bdf, direct.group)
    fds = eventfds(WATCH_VECTORS)
    poller = select.epoll()
    try:
        rawvfio.msix_enable(opened.device, fds)
        for fd in fds:
            poller.register(fd, select.EPOLLIN)
        writer = start_writer(opened.device)
        started = time.thread_time()
        counted = 0
        while counted < WATCH_EVENTS:
            for fd, _ in poller.poll():
                try:
                    counted += os.eventfd_read(fd)
                except BlockingIOError:
                    pass
        spent = time.thread_time() - started
        writer.join()
        rawvfio.msix_disable(opened.device)
    finally:
        poller.close()
        opened.close()
        close_all(fds)
    return spent


def watch_msixd(msixd: Msixd) -> float:
    owner = msixd.owner
    owner.enable(msixd.bdf, WATCH_VECTORS)
    owned = owner.owned(msixd.bdf)
    assert owned is not None
    writer = start_writer(owned.device_fd)
    started = time.thread_time()
    while sum(owner.counts(msixd.bdf).values()) < WATCH_EVENTS:
        time.sleep(WATCH_INTERVAL)
    spent = time.thread_time() - started
    writer.join()
    owner.disable(msixd.bdf)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vectors", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    guest.require_bench_guest()
    bdf = guest.find_device(*NVME)
    before = guest.driver_of(bdf)
    state = Path(tempfile.mkdtemp())
    services = Services.build(KernelRoots(), state / "state.json")
    services.binding.bind(bdf)
    server = serve(services, state / "msixd.sock")
    group = guest.iommu_group(bdf)
    opened = rawvfio.open_device(bdf, group)
    flags, table = rawvfio.irq_info(opened.device, rawvfio.MSIX)
    opened.close()
    dynamic = not flags & rawvfio.NORESIZE
    results: dict[str, object] = {
        "kernel": os.uname().release, "device": bdf, "table_size": table, "dynamic_msix": dynamic,
        "repeat": REPEAT, "vectors": {},
    }
    try:
        with grpc.insecure_channel(f"unix:{state / 'msixd.sock'}") as channel:
            direct = Direct(bdf, group, dynamic)
            msixd = Msixd(services, msix_pb2_grpc.MsixServiceStub(channel), bdf)
            for n in args.vectors:
                row = measure_vectors(direct, msixd, n)
                results["vectors"][str(n)] = row  # type: ignore[index]
                print(f"N={n}: {row}", flush=True)
            floor_s, own_s = watch_floor(direct), watch_msixd(msixd)
            per_million = 1_000_000 / WATCH_EVENTS
            results["watch"] = {
                "events": WATCH_EVENTS, "vectors": WATCH_VECTORS, "interval_s": WATCH_INTERVAL,
                "source": "loopback triggers (VFIO SET_IRQS DATA_NONE|ACTION_TRIGGER)",
                "epoll_cpu_s_per_million": round(floor_s * per_million, 4),
                "msixd_cpu_s_per_million": round(own_s * per_million, 4),
                "ratio": round(own_s / floor_s, 4),
            }
            print(f"watch: {results['watch']}", flush=True)
    finally:
        server.stop(None)
        services.owner.close_all()
        services.binding.release(bdf)
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
