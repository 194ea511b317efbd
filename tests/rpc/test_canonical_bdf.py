"""Every answer that names a device names it as msixd does, "DDDD:BB:DD.F", whatever form the
request used ("00:03.0", upper-case hex): the client echoes the answer, not what was typed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.serving import serve

OWNED = "0000:00:03.0"  # moved to vfio-pci in the copy
FOREIGN = "0000:00:04.0"  # stays on its kernel driver


@pytest.fixture
def stub(tree: Callable[[str], Path], tmp_path: Path) -> Iterator[msix_pb2_grpc.MsixServiceStub]:
    root = tree("host-6.18")
    move_to_vfio(root, OWNED)
    fake = FakeVfio({OWNED: FakeDevice(table_size=8, dynamic=True)})
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    server = serve(services, tmp_path / "msixd.sock")
    with grpc.insecure_channel(f"unix:{tmp_path / 'msixd.sock'}") as channel:
        yield msix_pb2_grpc.MsixServiceStub(channel)
    server.stop(None)


def test_set_affinity_answers_the_canonical_bdf(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    assert stub.SetAffinity(pb.SetAffinityRequest(bdf="00:04.0", vector=2, cpus="1")).bdf == FOREIGN
    assert stub.SetAffinity(pb.SetAffinityRequest(bdf="00:04.0", vector=2, cpus="1", dry_run=True)).bdf == FOREIGN


def test_trigger_answers_the_canonical_bdf(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    assert stub.Enable(pb.EnableRequest(bdf="00:03.0", vectors=2)).device.bdf == OWNED
    answer = stub.Trigger(pb.TriggerRequest(bdf="00:03.0", vector=1))
    assert (answer.bdf, answer.eventfd_count) == (OWNED, 1)


def test_the_other_answers_already_did(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    assert stub.GetDevice(pb.GetDeviceRequest(bdf="00:04.0")).bdf == FOREIGN
    assert stub.Bind(pb.BindRequest(bdf="00:03.0")).bdf == OWNED
    assert stub.Enable(pb.EnableRequest(bdf="00:03.0", vectors=2)).device.bdf == OWNED
    assert stub.Disable(pb.DisableRequest(bdf="00:03.0", vector=1)).device.bdf == OWNED
