"""Inventory at host scale against its floor: the fewest reads the kernel requires (bench/floor.py).

For each synthetic tree (bench/synth.py), in the same run, on the same tree:

- floor: bench/floor.py, remembering the fixed facts per device identity as
  msixd does (`warm`), for a listing with vectors and for GetDevice of every
  device; and remembering nothing (`cold`), for reference;
- msixd in process: Inventory.list_devices(include_vectors=True), and
  Inventory.get_device for every device;
- msixd over its Unix socket: ListDevices(include_vectors) and GetDevice for
  every device, sent by this process to an msixd process serving the tree
  (through its gateway, as every caller does), each answer received whole.

ROUNDS rounds; each round runs every measure once, one after the other, so a
burst of load on a shared machine falls on all of them alike. Every measure
counts CPU time, not wall time: what the reads, the Python and the transport
cost, not the time other processes held the CPU (this machine is shared, and
its wall clock says more about its neighbours than about msixd). In process,
this process's CPU time; over the socket, msixd's process (all its threads:
gateway, gRPC, workers) and this client's together, which is the wall time a
caller would see on an idle machine, the two working one after the other.
Wall times are kept too. Each ratio is the median of the rounds' ratios, with
their lowest and highest as its spread.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from bench.floor import Floor
from bench.synth import generate
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory

ROUNDS = 7
REPO = Path(__file__).resolve().parents[1]
_BIG = [("grpc.max_receive_message_length", 256 << 20)]


def cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def cpu_clock(pid: int) -> int:
    """The CPU-time clock of process pid, all its threads (clock_getcpuclockid(3))."""
    clock = ctypes.c_int()
    error = ctypes.CDLL(None, use_errno=True).clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise OSError(error, os.strerror(error))
    return clock.value


def cpu_both(server: int, work: Callable[[], object]) -> tuple[float, float]:
    """(CPU time of this process and of the server together, wall time) that work took."""
    began, began_server, began_wall = time.process_time(), time.clock_gettime(server), time.perf_counter()
    work()
    spent = time.process_time() - began + time.clock_gettime(server) - began_server
    return spent, time.perf_counter() - began_wall


def wall(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 5), "min": round(min(samples), 5),
            "max": round(max(samples), 5)}


def ratio(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """The median of per-round ratios, and their spread."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
            "max": round(max(ratios), 2)}


def start_msixd(root: Path, scratch: Path) -> tuple[subprocess.Popen[str], Path]:
    from tests.e2e.conftest import wait_serving

    socket = scratch / "msixd.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(socket), "--state-dir", str(scratch / "state"),
         "--config", str(scratch / "absent.toml"), "--root", str(root), "--log-format", "json",
         "--log-level", "error"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    wait_serving(socket, daemon)
    return daemon, socket


def measure(ncpus: int, nirqs: int, scratch: Path, rounds: int = ROUNDS) -> dict[str, object]:
    tree = scratch / f"tree-{ncpus}-{nirqs}"
    bdfs = generate(tree, ncpus, nirqs)
    roots = KernelRoots.under(tree)
    inventory = Inventory(roots)
    warm = Floor(roots)
    daemon, socket = start_msixd(tree, scratch)
    samples: dict[str, list[float]] = {key: [] for key in (
        "floor_inventory", "floor_get_device", "floor_cold_inventory", "inventory", "get_device",
        "list_devices_rpc", "get_device_rpc", "floor_inventory_wall", "list_devices_rpc_wall", "get_device_rpc_wall")}
    try:
        server = cpu_clock(daemon.pid)
        with grpc.insecure_channel(f"unix:{socket}", options=_BIG) as channel:
            stub = msix_pb2_grpc.MsixServiceStub(channel)

            def list_rpc() -> object:
                return stub.ListDevices(pb.ListDevicesRequest(include_vectors=True))

            def get_rpc() -> object:
                return [stub.GetDevice(pb.GetDeviceRequest(bdf=bdf)) for bdf in bdfs]

            def get_inprocess() -> object:
                return [inventory.get_device(bdf) for bdf in bdfs]

            def get_floor() -> None:
                for bdf in bdfs:
                    warm.device(bdf)

            # First answers: every reader learns the fixed facts, and the page and dentry caches fill.
            for work in (warm.inventory, inventory.list_devices, list_rpc, get_rpc):
                work()
            for _ in range(rounds):
                samples["floor_cold_inventory"].append(cpu(Floor(roots, remember=False).inventory))
                samples["floor_inventory"].append(cpu(warm.inventory))
                samples["inventory"].append(cpu(lambda: inventory.list_devices(include_vectors=True)))
                samples["floor_get_device"].append(cpu(get_floor))
                samples["get_device"].append(cpu(get_inprocess))
                samples["floor_inventory_wall"].append(wall(warm.inventory))
                for name, work in (("list_devices_rpc", list_rpc), ("get_device_rpc", get_rpc)):
                    spent, took = cpu_both(server, work)
                    samples[name].append(spent)
                    samples[f"{name}_wall"].append(took)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(tree)
    s = samples
    return {
        "cpus": ncpus, "irqs": nirqs, "devices": len(bdfs), "rounds": rounds,
        "seconds": {key: summary(values) for key, values in s.items()},
        "ratio_inventory": ratio(s["inventory"], s["floor_inventory"]),
        "ratio_get_device": ratio(s["get_device"], s["floor_get_device"]),
        "ratio_list_devices_rpc": ratio(s["list_devices_rpc"], s["floor_inventory"]),
        "ratio_get_device_rpc": ratio(s["get_device_rpc"], s["floor_get_device"]),
        "ratio_list_devices_rpc_wall": ratio(s["list_devices_rpc_wall"], s["floor_inventory_wall"]),
        "ratio_cold_floor": ratio(s["floor_cold_inventory"], s["floor_inventory"]),
    }


def run(cpus: list[int], irqs: list[int], rounds: int = ROUNDS) -> list[dict[str, object]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="msixd-bench-") as scratch:
        for ncpus in cpus:
            for nirqs in irqs:
                result = measure(ncpus, nirqs, Path(scratch), rounds)
                print({k: v for k, v in result.items() if k != "seconds"}, flush=True)
                results.append(result)
    return results


def breakdown(ncpus: int, nirqs: int, rounds: int = ROUNDS) -> str:
    """Where ListDevices' CPU time goes beyond the floor, step by step, in process: the reads
    and their parsing, the wire bytes, the message the servicer returns (parsed from them),
    gRPC's serialization of it, and the caller's parse of what it receives. The rest of the
    RPC's cost (HTTP/2, the gateway's relay) is the socket figure less these."""
    from msixd.rpc import convert

    with tempfile.TemporaryDirectory(prefix="msixd-bench-") as scratch:
        tree = Path(scratch) / "tree"
        generate(tree, ncpus, nirqs)
        roots = KernelRoots.under(tree)
        inventory, warm = Inventory(roots), Floor(roots)
        found = inventory.list_devices(include_vectors=True)
        warm.inventory()
        message = convert.devices(found)
        data = message.SerializeToString()
        steps: dict[str, Callable[[], object]] = {
            "floor (the fewest reads)": warm.inventory,
            "Inventory.list_devices (reads and parsing)": lambda: inventory.list_devices(include_vectors=True),
            "wire bytes of the devices (convert.devices_wire)": lambda: convert.devices_wire(found),
            "convert.devices (wire bytes, parsed into the message)": lambda: convert.devices(found),
            "SerializeToString (gRPC sends the message)": message.SerializeToString,
            "ListDevicesResponse.FromString (the caller receives it)": lambda: pb.ListDevicesResponse.FromString(data),
        }
        samples = {name: [cpu(work) for _ in range(rounds)] for name, work in steps.items()}
    floor_s = statistics.median(samples["floor (the fewest reads)"])
    lines = [f"ListDevices(include_vectors) at {ncpus} CPUs, {nirqs} IRQs: {len(found)} devices, "
             f"{len(data)} bytes; CPU time, median of {rounds}", ""]
    for name, values in samples.items():
        seconds = statistics.median(values)
        lines.append(f"{seconds * 1e3:9.2f} ms  {seconds / floor_s:5.2f}x floor  {name}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--irqs", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    run(args.cpus, args.irqs, args.rounds)
