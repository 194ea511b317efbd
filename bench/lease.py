"""Leases on a real kernel: trigger -> consumer wake-up through a leased eventfd, against the floor.

    python -m tests.vm.bench --kernel 6.12 --out /tmp/b -- python -m bench.lease --out /mnt/lease.json

Run by bench/run in a 6.1 and a 6.12 guest, on the e1000e, which msixd (in
this process) owns with two vectors. A consumer process leases vector 0 with
the device's VFIO file over msixd's lease socket (msixctl.lease): its eventfd
came over SCM_RIGHTS. Through that file the consumer then installs an eventfd
of its own on vector 1 (VFIO_DEVICE_SET_IRQS with DATA_EVENTFD, which the
device file allows its holder): for vector 1 it is the process that called
SET_IRQS and holds the fd it passed, the floor. A trigger process, forked by
the consumer so it inherits the device's file, takes the time and issues a
loopback interrupt (SET_IRQS DATA_NONE|ACTION_TRIGGER, which signals the
vector's eventfd as a real MSI-X message would: vfio_pci_set_msi_trigger),
alternately on vector 0 and vector 1; the consumer polls that vector's
eventfd and takes the time it woke (CLOCK_MONOTONIC, one clock for both
processes, each pinned to its own CPU). One process, one device, the same
kernel path; only where the eventfd came from differs, and every other
sample is the floor's, so the emulated machine's drift hits both alike.
Goal: leased within 1.1x the floor.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.vm import guest, rawvfio

E1000E = (0x8086, 0x10D3)
LEASED, FLOOR = 0, 1  # vectors
SAMPLES = 3000  # of each
WARMUP = 100
CONSUMER_CPU, TRIGGER_CPU = 1, 0


def _trigger_loop(device: int, go: int, stamps: int) -> None:
    """The trigger process: for each vector number read from `go`, take the time, trigger it, send the time."""
    os.sched_setaffinity(0, {TRIGGER_CPU})
    requests = {vector: bytearray(struct.pack("=IIIII", 20, 0x21, rawvfio.MSIX, vector, 1))  # DATA_NONE|TRIGGER
                for vector in (LEASED, FLOOR)}
    while (byte := os.read(go, 1)) != b"q":
        started = time.monotonic_ns()
        fcntl.ioctl(device, rawvfio.DEVICE_SET_IRQS, requests[byte[0]])
        os.write(stamps, struct.pack("=q", started))
    os._exit(0)


def measure(device: int, eventfds: dict[int, int], samples: int) -> dict[int, list[int]]:
    """Wake-up latencies in ns per vector, alternating: this process consumes, a forked child triggers."""
    go_r, go_w = os.pipe()
    stamps_r, stamps_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w)
        os.close(stamps_r)
        _trigger_loop(device, go_r, stamps_w)
    os.close(go_r)
    os.close(stamps_w)
    os.sched_setaffinity(0, {CONSUMER_CPU})
    pollers = {}
    for vector, fd in eventfds.items():
        pollers[vector] = select.poll()
        pollers[vector].register(fd, select.POLLIN)
    latencies: dict[int, list[int]] = {vector: [] for vector in eventfds}
    try:
        for n in range(2 * (samples + WARMUP)):
            vector = (LEASED, FLOOR)[n % 2]
            os.write(go_w, bytes([vector]))
            pollers[vector].poll()
            woke = time.monotonic_ns()
            os.eventfd_read(eventfds[vector])
            (started,) = struct.unpack("=q", os.read(stamps_r, 8))
            if n >= 2 * WARMUP:
                latencies[vector].append(woke - started)
    finally:
        os.write(go_w, b"q")
        os.waitpid(child, 0)
        os.close(go_w)
        os.close(stamps_r)
    return latencies


def consume(socket_path: str, bdf: str, samples: int) -> dict[int, list[int]]:
    from msixctl.lease import lease

    with lease(bdf, vectors=[LEASED], device_fd=True, socket_path=socket_path) as held:
        assert held.device_fd is not None
        own = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # as msixd makes them: non-blocking
        try:
            assert rawvfio.msix_set(held.device_fd, FLOOR, [own]) == 0
            return measure(held.device_fd, {LEASED: held.eventfds[0], FLOOR: own}, samples)
        finally:
            os.close(own)


def summary(latencies: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"p50_us": round(statistics.median(ordered) / 1000, 2), "p90_us": round(at(0.90), 2),
            "p99_us": round(at(0.99), 2), "mean_us": round(statistics.fmean(ordered) / 1000, 2),
            "samples": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--consumer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        socket_path, bdf, samples = args.consumer
        print(json.dumps(consume(socket_path, bdf, int(samples))))
        return
    guest.require_bench_guest()
    from msixd.kernel.roots import KernelRoots
    from msixd.rpc.access import Access, PeerRegistry
    from msixd.rpc.gateway import Limits
    from msixd.rpc.leaseserve import LeaseServer
    from msixd.service.services import Services

    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    state = Path(tempfile.mkdtemp(prefix="msixd-bench-lease-"))
    services = Services.build(KernelRoots(), state / "state.json")
    services.binding.bind(bdf)
    socket_path = state / "msixd-lease.sock"
    server = LeaseServer(socket_path, services.leases, Access(PeerRegistry(), "msixd", "msixd-admin"), Limits())
    server.start()
    try:
        services.owner.enable(bdf, 2)
        done = subprocess.run([sys.executable, "-m", "bench.lease", "--consumer", str(socket_path), bdf,
                               str(args.samples)], capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise SystemExit(f"the consumer failed: {done.stderr[-3000:]}")
        latencies = {int(vector): values for vector, values in json.loads(done.stdout).items()}
    finally:
        server.stop()
        services.owner.close_all()
        services.binding.release(bdf)
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
        shutil.rmtree(state, ignore_errors=True)
    floor, leased = summary(latencies[FLOOR]), summary(latencies[LEASED])
    results = {
        "kernel": os.uname().release, "device": bdf,
        "source": "loopback triggers (VFIO SET_IRQS DATA_NONE|ACTION_TRIGGER) from a second process, "
                  "alternating between the leased vector and the consumer's own",
        "floor": floor, "leased": leased,
        "ratio_p50": round(leased["p50_us"] / floor["p50_us"], 3),
        "ratio_p99": round(leased["p99_us"] / floor["p99_us"], 3),
    }
    print(json.dumps(results, indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
