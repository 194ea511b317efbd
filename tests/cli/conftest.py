"""A real gRPC server with a fake servicer on a temporary socket, for msixctl."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc

DEVICE = pb.Device(
    bdf="0000:00:0a.0",
    vendor_id=0x8086,
    device_id=0x10D3,
    driver="vfio-pci",
    iommu_group=10,
    numa_node=-1,
    local_cpus=[0, 1],
    msix_probe=pb.MSIX_PROBE_PRESENT,
    msix=pb.MsixCapability(offset=0xA0, table_size=5, enabled=True, table_bir=3, pba_bir=3, pba_offset=0x2000),
    irq_mode=pb.IRQ_MODE_MSIX,
    vectors_allocated=2,
    domain=pb.DomainRef(name="IR-PCI-MSIX-0000:00:0a.0", scheme=pb.DOMAIN_SCHEME_PER_DEVICE, remapped=True,
                        source=pb.DOMAIN_SOURCE_INFERRED),
    vectors=[
        pb.Vector(index=0, index_source=pb.INDEX_SOURCE_ACTION, irq=41, chip="IR-PCI-MSIX-0000:00:0a.0",
                  actions=["vfio-msix[0](0000:00:0a.0)"], type="edge", affinity=[0, 1], effective_affinity=[0],
                  affinity_settable=True, per_cpu_count=[3, 0], total_count=3,
                  lease=pb.LeaseHolder(lease="3fa2c1d09b7e", uid=4242, pid=777, since=1700000000.0)),
        pb.Vector(index=1, index_source=pb.INDEX_SOURCE_ORDER, irq=42, chip="IR-PCI-MSIX-0000:00:0a.0",
                  affinity=[1], effective_affinity=[1], affinity_settable=False,
                  affinity_reason="the kernel manages this IRQ's affinity", per_cpu_count=[0, 0]),
    ],
)
LEASE = pb.Lease(id="3fa2c1d09b7e", bdf="0000:00:0a.0", vectors=[0], irqs=[41], holder_uid=4242, holder_gid=100,
                 holder_pid=777, since=1700000000.0, on_return=pb.LEASE_RETURN_OWN)


def canonical(bdf: str) -> str:
    """What msixd answers for a BDF given as BB:DD.F or in upper case."""
    return bdf.lower() if bdf.count(":") == 2 else f"0000:{bdf.lower()}"


UNREADABLE = pb.Device(bdf="0000:00:01.0", vendor_id=0x1AF4, device_id=0x1041, msix_probe=pb.MSIX_PROBE_UNREADABLE)


class FakeServicer(msix_pb2_grpc.MsixServiceServicer):
    def __init__(self) -> None:
        self.requests: list[object] = []

    def GetStatus(self, request, context):  # type: ignore[no-untyped-def]
        return pb.Status(daemon_version="9.9", kernel_release="6.12.0", cpus=pb.Cpus(online=[0, 1]),
                         features=pb.KernelFeatures(vfio=pb.Feature(state=pb.FEATURE_STATE_PRESENT, detail="yes")))

    def ListDevices(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.ListDevicesResponse(devices=[DEVICE, UNREADABLE])

    def GetDevice(self, request, context):  # type: ignore[no-untyped-def]
        if request.bdf == DEVICE.bdf:
            return DEVICE
        if "/" in request.bdf:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid PCI address {request.bdf!r}")
        context.abort(grpc.StatusCode.NOT_FOUND, f"no PCI device {request.bdf}")

    def ListDomains(self, request, context):  # type: ignore[no-untyped-def]
        domain = pb.Domain(name="IR-PCI-MSI", scheme=pb.DOMAIN_SCHEME_GLOBAL, bdfs=["0000:00:0a.0"], mapped=5,
                           parents=["INTEL-IR-0", "VECTOR"])
        return pb.ListDomainsResponse(domains=[domain])

    def SetAffinity(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        if request.cpus == "9":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "CPU 9 is not online (online: 0-1)")
        return pb.SetAffinityResponse(bdf=canonical(request.bdf), vector=request.vector, irq=44, affinity=[1],
                                      effective_affinity=[1])

    def Spread(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.SpreadResponse(dry_run=request.dry_run, cpus=[0, 1],
                                 placements=[pb.Placement(vector=0, irq=41, cpu=0),
                                             pb.Placement(vector=1, irq=42, cpu=1)])

    def Enable(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.EnableResponse(path=pb.RESIZE_PATH_REENABLE, vectors_before=2, device=DEVICE)

    def Disable(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.DisableResponse(released=[request.vector] if request.HasField("vector") else [0, 1, 2], device=DEVICE)

    def Trigger(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.TriggerResponse(bdf=canonical(request.bdf), eventfd_count=7)


    def ListLeases(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.ListLeasesResponse(leases=[LEASE])

    def RevokeLease(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        if request.lease != LEASE.id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no lease {request.lease!r}")
        return pb.RevokeLeaseResponse(lease=LEASE)

    def Watch(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        for n in range(request.count or 3):
            yield pb.WatchSample(bdf=request.bdf, time=1000.0 + n,
                                 vectors=[pb.VectorSample(vector=0, irq=41, total=n, rate=1.0,
                                                          source=pb.COUNT_SOURCE_EVENTFD)])


@pytest.fixture
def fake() -> FakeServicer:
    return FakeServicer()


@pytest.fixture
def socket_path(tmp_path: Path, fake: FakeServicer) -> Iterator[Path]:
    path = tmp_path / "msixd.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    msix_pb2_grpc.add_MsixServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield path
    server.stop(None).wait()
