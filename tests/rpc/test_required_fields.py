"""A required field where 0 is a valid value has presence: left out (or misspelled), it is INVALID_ARGUMENT.

proto3 does not serialise a scalar at its default, so without presence a client that leaves
`vector` out, or misspells it (a client built from the .proto in another language drops an
unknown field name silently), is indistinguishable from one asking for vector 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.serving import serve

OWNED = "0000:00:03.0"
KERNEL = "0000:00:04.0"  # a virtio device with movable vectors, not owned


class Served:
    def __init__(self, root: Path, channel: grpc.Channel, fake: FakeVfio) -> None:
        self.root, self.channel, self.fake = root, channel, fake
        self.stub = msix_pb2_grpc.MsixServiceStub(channel)

    def raw(self, method: str, request: bytes) -> bytes:
        """Send bytes as they are: what a client with a differently spelled field sends."""
        call = self.channel.unary_unary(f"/msix.v1.MsixService/{method}", request_serializer=None,
                                        response_deserializer=None)
        return bytes(call(request, timeout=10))

    def affinity_of(self, bdf: str, vector: int) -> str:
        irq = {v.index: v.irq for v in self.stub.GetDevice(pb.GetDeviceRequest(bdf=bdf)).vectors}[vector]
        return (self.root / f"proc/irq/{irq}/smp_affinity_list").read_text().strip()


@pytest.fixture
def served(tree: Callable[[str], Path], tmp_path: Path) -> Iterator[Served]:
    root = tree("host-6.18")
    move_to_vfio(root, OWNED)
    fake = FakeVfio({OWNED: FakeDevice(table_size=8, dynamic=True)})
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    server = serve(services, tmp_path / "msixd.sock")
    with grpc.insecure_channel(f"unix:{tmp_path / 'msixd.sock'}") as channel:
        yield Served(root, channel, fake)
    server.stop(None)


def invalid(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return str(err.value.details())


def test_set_affinity_without_vector_moves_nothing(served: Served) -> None:
    before = served.affinity_of(KERNEL, 0)
    details = invalid(lambda: served.stub.SetAffinity(pb.SetAffinityRequest(bdf=KERNEL, cpus="1")))
    assert "SetAffinityRequest.vector" in details and "required" in details
    # bdf (1) and cpus (3) as a client sends them, and "vector" under a number msixd does not know (9).
    misspelled = pb.SetAffinityRequest(bdf=KERNEL, cpus="1").SerializeToString() + bytes([9 << 3, 0])
    assert "SetAffinityRequest.vector" in invalid(lambda: served.raw("SetAffinity", misspelled))
    assert served.affinity_of(KERNEL, 0) == before == "0-1", "vector 0 was not moved"
    served.stub.SetAffinity(pb.SetAffinityRequest(bdf=KERNEL, vector=0, cpus="1"))
    assert served.affinity_of(KERNEL, 0) == "1", "an explicit 0 is vector 0"


def test_trigger_without_vector_triggers_nothing(served: Served) -> None:
    served.stub.Enable(pb.EnableRequest(bdf=OWNED, vectors=2))
    details = invalid(lambda: served.stub.Trigger(pb.TriggerRequest(bdf=OWNED)))
    assert "TriggerRequest.vector" in details
    assert not [call for call in served.fake.calls if call[0] == "msix_trigger"]
    assert served.stub.Trigger(pb.TriggerRequest(bdf=OWNED, vector=0)).eventfd_count == 1


def test_watch_without_interval_is_refused(served: Served) -> None:
    details = invalid(lambda: list(served.stub.Watch(pb.WatchRequest(bdf=KERNEL, count=1))))
    assert "WatchRequest.interval_ms" in details
    assert len(list(served.stub.Watch(pb.WatchRequest(bdf=KERNEL, count=1, interval_ms=100)))) == 1


# Every request field where the zero value is valid and meaningful, and the field says which one.
REQUIRED_WITH_PRESENCE = {("SetAffinityRequest", "vector"), ("TriggerRequest", "vector"),
                          ("WatchRequest", "interval_ms"), ("DisableRequest", "vector")}


def test_the_fields_that_need_presence_have_it() -> None:
    with_presence = {
        (message.name, field.name)
        for message in pb.DESCRIPTOR.message_types_by_name.values() if message.name.endswith("Request")
        for field in message.fields
        if field.has_presence and field.type != FieldDescriptor.TYPE_MESSAGE
    }
    assert with_presence == REQUIRED_WITH_PRESENCE
