"""Running out, on real kernels: the CPUs' interrupt vectors, and msixd's own file descriptors.

The guest has 2 CPUs, so x86's vector space (about 200 device vectors per
CPU) holds a few hundred MSI-X vectors in all, while the nvme's table has
2,048 entries. Growing past what the kernel can give must be refused with
the reason and what the device kept, lose none of the vectors it had, and
leave msixd answering for the device; asking for more eventfds than msixd may
open must be refused the same way, with nothing leaked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from tests.vm import guest
from tests.vm.inprocess import Msixd

pytestmark = pytest.mark.vm

NVME = (0x1B36, 0x0010)


@pytest.fixture
def nvme(tmp_path: Path) -> Iterator[tuple[Msixd, str]]:
    msixd = Msixd(tmp_path)
    bdf = guest.find_device(*NVME)
    before = guest.driver_of(bdf)
    try:
        msixd.stub.Bind(pb.BindRequest(bdf=bdf))
        yield msixd, bdf
        msixd.stub.Release(pb.ReleaseRequest(bdf=bdf))
    finally:
        msixd.stop()
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)


def triggered(device: pb.Device) -> list[int]:
    return sorted(v.index for v in device.vectors if any(a.startswith("vfio-msix[") for a in v.actions))


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    return err.value


def test_growing_past_the_vector_space_keeps_what_the_device_had(nvme: tuple[Msixd, str]) -> None:
    msixd, bdf = nvme
    stub = msixd.stub
    device = stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
    assert device.msix.table_size == 2048
    stub.Enable(pb.EnableRequest(bdf=bdf, vectors=64))
    stub.Enable(pb.EnableRequest(bdf=bdf, vectors=256))
    stub.SetAffinity(pb.SetAffinityRequest(bdf=bdf, vector=200, cpus="1"))
    fds = len(os.listdir("/proc/self/fd"))

    err = refused(lambda: stub.Enable(pb.EnableRequest(bdf=bdf, vectors=512)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert "keeps its 256 vectors" in (err.details() or ""), err.details()
    shown = stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
    assert triggered(shown) == list(range(256)), "no vector lost"
    assert list({v.index: v for v in shown.vectors}[200].affinity) == [1], "placements kept"
    assert stub.Trigger(pb.TriggerRequest(bdf=bdf, vector=255)).eventfd_count == 1
    assert len(os.listdir("/proc/self/fd")) == fds, "no descriptor leaked"

    # More eventfds than this process may open (the guest's limit is 1024): refused, nothing leaked.
    err = refused(lambda: stub.Enable(pb.EnableRequest(bdf=bdf, vectors=2048)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert triggered(stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))) == list(range(256))
    assert len(os.listdir("/proc/self/fd")) == fds, "no descriptor leaked"

    assert stub.Enable(pb.EnableRequest(bdf=bdf, vectors=100)).path == pb.RESIZE_PATH_SHRINK
    assert stub.Disable(pb.DisableRequest(bdf=bdf)).released == list(range(100))
    assert guest.msi_irqs(bdf) == [], "every vector released"
