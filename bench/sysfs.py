"""The inventory on a real kernel's sysfs, in a bench guest, against the floor (bench/floor.py).

    python -m tests.vm.bench --kernel 6.12 --out /tmp/b -- python -m bench.sysfs --out /mnt/sysfs.json

Run by bench/run in a 6.1 and a 6.12 guest. The synthetic trees of
bench/inventory.py are regular files; here every read goes through sysfs and
procfs as on a host: an attribute is formatted by the kernel when it is read,
and a config-space read is a config access to the device (a trap into QEMU
here, an MMIO read on bare metal). The guest's e1000e and nvme have 4 KiB config
spaces, its virtio-net 256 bytes; each is measured under its own driver, and the
nvme also with VECTORS vectors msixd enabled through VFIO (its answer then
carries each vector's eventfd count too, which the floor reads as well).

For each device: GetDevice in process (Inventory.get_device) against the floor
remembering the fixed facts (warm) and remembering nothing (cold); and the whole
listing with vectors (Inventory.list_devices) against the floor's. CPU time of
this process, ROUNDS rounds of CALLS calls, every measure once per round in
turn; ratios are medians of the rounds' ratios, with their spread. For
reference, what reading each device's whole config file costs (what msixd did
on every answer before it read only the ranges it needs).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.floor import Floor
from bench.inventory import ratio, summary
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.vm import guest

ROUNDS = 15
CALLS = 10
VECTORS = 64
NVME = (0x1B36, 0x0010)
E1000E = (0x8086, 0x10D3)


def measure(works: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds of CPU per call, per round, for each work: every work once per round, in turn."""
    samples: dict[str, list[float]] = {name: [] for name in works}
    for work in works.values():  # first calls: the fixed facts learnt, the caches filled
        work()
    for _ in range(rounds):
        for name, work in works.items():
            began = time.process_time()
            for _ in range(calls):
                work()
            samples[name].append((time.process_time() - began) / calls)
    return samples


def report(samples: dict[str, list[float]], msixd: str, floor: str, cold: str) -> dict[str, object]:
    return {
        "seconds": {name: summary(values) for name, values in samples.items()},
        "ratio": ratio(samples[msixd], samples[floor]),
        "ratio_to_cold_floor": ratio(samples[msixd], samples[cold]),
    }


def profile(work: Callable[[], object], calls: int) -> str:
    """Where the time of calls calls of work goes (cProfile: deterministic, so it also counts
    the calls; it slows Python down more than the reads, so its shares lean towards Python)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        work()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    return text.getvalue()


def whole_config(roots: KernelRoots, bdf: str) -> tuple[int, float]:
    """(size, seconds) of reading the function's whole config file once."""
    path = f"{roots.sysfs}/bus/pci/devices/{bdf}/config"
    began = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = len(os.read(fd, 65536))
    finally:
        os.close(fd)
    return size, time.perf_counter() - began


def device_row(services: Services, roots: KernelRoots, bdf: str, rounds: int, calls: int,
               eventfds: dict[str, list[int]] | None = None) -> dict[str, object]:
    inventory = services.inventory
    warm = Floor(roots, eventfds=eventfds)

    def cold() -> None:
        Floor(roots, remember=False, eventfds=eventfds).device(bdf)

    samples = measure({"floor": lambda: warm.device(bdf), "floor_cold": cold,
                       "get_device": lambda: inventory.get_device(bdf)}, rounds, calls)
    device = inventory.get_device(bdf)
    size, seconds = whole_config(roots, bdf)
    return {
        "driver": device.pci.driver, "vendor_device": f"{device.pci.vendor_id:04x}:{device.pci.device_id:04x}",
        "vectors": len(device.vectors), "config_bytes": size, "whole_config_read_s": round(seconds, 6),
        **report(samples, "get_device", "floor", "floor_cold"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--vectors", type=int, default=VECTORS)
    args = parser.parse_args()
    guest.require_bench_guest()
    roots = KernelRoots()
    services = Services.build(roots, Path(tempfile.mkdtemp()) / "state.json")
    inventory = services.inventory
    results: dict[str, object] = {"kernel": os.uname().release, "rounds": args.rounds, "calls": args.calls,
                                  "devices": {}}
    for device in inventory.list_devices():
        row = device_row(services, roots, device.pci.bdf, args.rounds, args.calls)
        results["devices"][device.pci.bdf] = row  # type: ignore[index]
        print(device.pci.bdf, {k: v for k, v in row.items() if k != "seconds"}, flush=True)
    warm = Floor(roots)
    samples = measure({"floor": warm.inventory, "floor_cold": lambda: Floor(roots, remember=False).inventory(),
                       "inventory": lambda: inventory.list_devices(include_vectors=True)},
                      args.rounds, max(args.calls // 5, 1))
    results["inventory"] = report(samples, "inventory", "floor", "floor_cold")
    print("inventory", results["inventory"]["ratio"], flush=True)  # type: ignore[index]

    bdf = guest.find_device(*NVME)
    before = guest.driver_of(bdf)
    services.binding.bind(bdf)
    try:
        services.owner.enable(bdf, args.vectors)
        owned = services.owner.owned(bdf)
        assert owned is not None
        row = device_row(services, roots, bdf, args.rounds, args.calls, {bdf: list(owned.eventfds.values())})
        results["owned"] = {"bdf": bdf, **row}
        print("owned", bdf, {k: v for k, v in row.items() if k != "seconds"}, flush=True)
        owned_profile = profile(lambda: inventory.get_device(bdf), args.calls * 5)
    finally:
        services.owner.close_all()
        services.binding.release(bdf)
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
    e1000e = guest.find_device(*E1000E)
    profiles = {f"GetDevice {e1000e} (e1000e), {args.calls * 20} calls":
                profile(lambda: inventory.get_device(e1000e), args.calls * 20),
                f"GetDevice {bdf} (nvme owned, {args.vectors} vectors), {args.calls * 5} calls": owned_profile}
    results["profiles"] = profiles
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
