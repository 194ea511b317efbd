"""Time to enable N MSI-X vectors: msixd against a minimal direct-ioctl loop, in one bench guest.

    python -m tests.vm.bench --kernel 6.12 --out /tmp/b -- python -m bench.vfio_enable --out /mnt/vfio_enable.json

Both sides do the same work from a device nobody holds: open the container,
group and device, then one SET_IRQS with N eventfds; the measurement ends when
the vectors are enabled. Between repetitions MSI-X is disabled and everything
closed, outside the timed region. The floor is rawvfio (plain fcntl, no
checks); msixd is measured in-process (Owner.enable) and over gRPC (the Enable
RPC on a Unix socket, which also returns the device's inventory). Figures are
medians of REPEAT runs; the ratios are what is comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.serving import serve
from tests.vm import guest, rawvfio

NVME = (0x1B36, 0x0010)
REPEAT = 15


def direct(bdf: str, group: int, vectors: int) -> float:
    fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(vectors)]
    started = time.perf_counter()
    opened = rawvfio.open_device(bdf, group)
    assert rawvfio.msix_enable(opened.device, fds) == 0
    elapsed = time.perf_counter() - started
    rawvfio.msix_disable(opened.device)
    opened.close()
    for fd in fds:
        os.close(fd)
    return elapsed


def in_process(services: Services, bdf: str, vectors: int) -> float:
    started = time.perf_counter()
    services.owner.enable(bdf, vectors)
    elapsed = time.perf_counter() - started
    services.owner.disable(bdf)
    return elapsed


def over_grpc(stub: msix_pb2_grpc.MsixServiceStub, bdf: str, vectors: int) -> float:
    started = time.perf_counter()
    stub.Enable(pb.EnableRequest(bdf=bdf, vectors=vectors))
    elapsed = time.perf_counter() - started
    stub.Disable(pb.DisableRequest(bdf=bdf))
    return elapsed


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
    results = {"kernel": os.uname().release, "device": bdf, "repeat": REPEAT, "vectors": {}}
    try:
        group = guest.iommu_group(bdf)
        with grpc.insecure_channel(f"unix:{state / 'msixd.sock'}") as channel:
            stub = msix_pb2_grpc.MsixServiceStub(channel)
            for vectors in args.vectors:
                for _ in range(2):  # first calls load modules' code paths and Python imports
                    direct(bdf, group, vectors), in_process(services, bdf, vectors), over_grpc(stub, bdf, vectors)
                floor = statistics.median(direct(bdf, group, vectors) for _ in range(REPEAT))
                owner = statistics.median(in_process(services, bdf, vectors) for _ in range(REPEAT))
                rpc = statistics.median(over_grpc(stub, bdf, vectors) for _ in range(REPEAT))
                results["vectors"][str(vectors)] = {
                    "direct_ms": round(floor * 1e3, 3),
                    "msixd_in_process_ms": round(owner * 1e3, 3),
                    "msixd_grpc_ms": round(rpc * 1e3, 3),
                    "ratio_in_process": round(owner / floor, 2),
                    "ratio_grpc": round(rpc / floor, 2),
                }
                print(f"N={vectors}: {results['vectors'][str(vectors)]}", flush=True)
    finally:
        server.stop(None)
        services.binding.release(bdf)
        services.owner.close_all()
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
