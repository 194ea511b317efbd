"""Inventory at host scale against its floor: the same file operations with bare os calls.

For each synthetic tree (bench/synth.py) the inventory runs once with its file
operations recorded (reads, directory listings, links, stats); the floor
replays exactly that list with os.open/os.read/os.close, os.listdir,
os.readlink and os.stat, nothing else. Then, in the same run, each is timed
(median of REPEAT), and so is ListDevices (include_vectors) and GetDevice for
every device over the Unix socket through the gateway. The ratio to the floor
is what carries across machines; the seconds are this machine's.
"""

from __future__ import annotations

import importlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import grpc

from bench.synth import generate
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel import files, irq
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory
from msixd.service.services import Services
from tests.serving import serve

REPEAT = 5


def median_seconds(work: Callable[[], object], repeat: int = REPEAT) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def record(inventory: Inventory) -> list[tuple[str, str]]:
    """The file operations one full inventory performs, in order."""
    operations: list[tuple[str, str]] = []
    real_read, real_list, real_link, real_stat = files.read_bytes, files.list_dir, files.read_link_name, os.stat

    def read_bytes(path: str) -> bytes | None:
        operations.append(("read", path))
        return real_read(path)

    def list_dir(path: str) -> list[str]:
        operations.append(("list", path))
        return real_list(path)

    def read_link_name(path: str) -> str | None:
        operations.append(("link", path))
        return real_link(path)

    def stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        operations.append(("stat", str(path)))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    replacements = {"read_bytes": read_bytes, "list_dir": list_dir, "read_link_name": read_link_name}
    # files.read_text calls read_bytes through its module; the readers imported the names themselves.
    targets = [files] + [importlib.import_module(f"msixd.kernel.{m}") for m in ("pci", "irq", "system", "debugfs")]
    patches = [mock.patch.object(module, name, new) for module in targets
               for name, new in replacements.items() if hasattr(module, name)]
    patches.append(mock.patch.object(irq.os, "stat", stat))
    for patch in patches:
        patch.start()
    try:
        inventory.list_devices(include_vectors=True)
    finally:
        for patch in patches:
            patch.stop()
    return operations


def floor(operations: list[tuple[str, str]]) -> None:
    """The cheapest reader of the same files: no parsing, no objects."""
    for kind, path in operations:
        try:
            if kind == "read":
                fd = os.open(path, os.O_RDONLY)
                os.read(fd, 65536)
                os.close(fd)
            elif kind == "list":
                os.listdir(path)
            elif kind == "link":
                os.readlink(path)
            else:
                os.stat(path)
        except OSError:
            pass


def measure(ncpus: int, nirqs: int, scratch: Path) -> dict[str, float | int]:
    tree = scratch / f"tree-{ncpus}-{nirqs}"
    bdfs = generate(tree, ncpus, nirqs)
    roots = KernelRoots.under(tree)
    services = Services.build(roots, scratch / "state.json")
    inventory = services.inventory
    operations = record(inventory)
    floor(operations)  # warm the page and dentry caches for both
    inventory.list_devices(include_vectors=True)
    floor_s = median_seconds(lambda: floor(operations))
    inventory_s = median_seconds(lambda: inventory.list_devices(include_vectors=True))
    server = serve(services, scratch / "msixd.sock")
    try:
        with grpc.insecure_channel(f"unix:{scratch / 'msixd.sock'}",
                                   options=[("grpc.max_receive_message_length", 256 << 20)]) as channel:
            stub = msix_pb2_grpc.MsixServiceStub(channel)
            list_s = median_seconds(lambda: stub.ListDevices(pb.ListDevicesRequest(include_vectors=True)))
            get_s = median_seconds(lambda: [stub.GetDevice(pb.GetDeviceRequest(bdf=b)) for b in bdfs])
    finally:
        server.stop(None)
        shutil.rmtree(tree)
    return {
        "cpus": ncpus, "irqs": nirqs, "devices": len(bdfs), "file_operations": len(operations),
        "floor_s": round(floor_s, 4), "inventory_s": round(inventory_s, 4),
        "list_devices_rpc_s": round(list_s, 4), "get_device_rpc_all_s": round(get_s, 4),
        "ratio_inventory": round(inventory_s / floor_s, 2),
        "ratio_list_devices_rpc": round(list_s / floor_s, 2),
        "ratio_get_device_rpc": round(get_s / floor_s, 2),
    }


def run(cpus: list[int], irqs: list[int]) -> list[dict[str, float | int]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="msixd-bench-") as scratch:
        for ncpus in cpus:
            for nirqs in irqs:
                result = measure(ncpus, nirqs, Path(scratch))
                print(result, flush=True)
                results.append(result)
    return results
