"""A real msixd gRPC server on a temporary Unix socket, over a captured tree."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.errors import MsixdError
from msixd.kernel.roots import KernelRoots
from msixd.rpc.server import SERVICE_NAME, SocketInUse, prepare_socket
from msixd.service.inventory import Inventory
from msixd.service.services import Services
from tests.serving import serve


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "msixd.sock"


@pytest.fixture
def channel(host_roots: KernelRoots, socket_path: Path) -> Iterator[grpc.Channel]:
    services = Services.build(host_roots, socket_path.parent / "state.json")
    server = serve(services, socket_path)
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        yield channel
    server.stop(None)


@pytest.fixture
def stub(channel: grpc.Channel) -> msix_pb2_grpc.MsixServiceStub:
    return msix_pb2_grpc.MsixServiceStub(channel)


def test_socket_is_group_only(channel: grpc.Channel, socket_path: Path) -> None:
    assert socket_path.stat().st_mode & 0o777 == 0o660


def test_list_devices(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    devices = stub.ListDevices(pb.ListDevicesRequest()).devices
    assert [d.bdf for d in devices] == [f"0000:00:0{i}.0" for i in range(1, 6)]
    first = devices[0]
    assert first.msix_probe == pb.MSIX_PROBE_PRESENT
    assert (first.msix.table_size, first.msix.enabled, first.vectors_allocated) == (5, True, 5)
    assert first.domain.name == "PCI-MSIX-0000:00:01.0"
    assert first.domain.source == pb.DOMAIN_SOURCE_INFERRED
    assert first.iommu_group == -1 and not first.vectors
    with_vectors = stub.ListDevices(pb.ListDevicesRequest(include_vectors=True, all_devices=True)).devices
    assert len(with_vectors) == 6 and len(with_vectors[1].vectors) == 5


def test_get_device(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    device = stub.GetDevice(pb.GetDeviceRequest(bdf="00:02.0"))
    assert device.bdf == "0000:00:02.0"
    vectors = [(v.index, v.irq, v.index_source, v.affinity_settable) for v in device.vectors]
    assert vectors == [(0, 35, pb.INDEX_SOURCE_HWIRQ, True), (1, 36, pb.INDEX_SOURCE_HWIRQ, False)]
    assert device.vectors[1].total_count == sum(device.vectors[1].per_cpu_count) > 0


@pytest.mark.parametrize(
    ("bdf", "code"),
    [
        ("../../x", grpc.StatusCode.INVALID_ARGUMENT),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("0000:00:1f.7", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_get_device_errors(stub: msix_pb2_grpc.MsixServiceStub, bdf: str, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
    assert err.value.code() == code
    assert bdf in err.value.details() or not bdf


def test_oversized_request_is_refused(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDevice(pb.GetDeviceRequest(bdf="0" * (1 << 20)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_echo_answers_what_it_was_sent(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    assert stub.Echo(pb.EchoRequest(payload=b"\x00msixd\xff")).payload == b"\x00msixd\xff"
    assert stub.Echo(pb.EchoRequest()).payload == b""


def test_domains_and_status(stub: msix_pb2_grpc.MsixServiceStub) -> None:
    domains = stub.ListDomains(pb.ListDomainsRequest()).domains
    assert len(domains) == 5 and list(domains[0].parents) == ["VECTOR"]
    status = stub.GetStatus(pb.GetStatusRequest())
    assert status.kernel_release.startswith("6.18")
    assert status.features.per_device_msi_domains.state == pb.FEATURE_STATE_PRESENT
    assert status.features.vfio.state == pb.FEATURE_STATE_ABSENT
    assert list(status.cpus.online) == [0, 1]


def test_a_crashing_request_is_internal_and_the_server_lives(
    stub: msix_pb2_grpc.MsixServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("secret detail")

    monkeypatch.setattr(Inventory, "list_domains", boom)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListDomains(pb.ListDomainsRequest())
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in err.value.details()
    assert stub.GetStatus(pb.GetStatusRequest()).daemon_version


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(answers).list_services_response.service}
    assert {"msix.v1.MsixService", "grpc.health.v1.Health"} <= names


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # bound, never listened: what a crashed daemon leaves
    prepare_socket(path)
    assert not path.exists()


def test_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(SocketInUse):
            prepare_socket(path)
    finally:
        live.close()


def test_a_regular_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "important"
    path.write_text("data")
    with pytest.raises(MsixdError, match="not a socket"):
        prepare_socket(path)
    assert path.read_text() == "data"


@pytest.mark.parametrize("cpus", ["1" * 5000, "0-" + "1" * 4400, "0-1:1/" + "2" * 4400])
def test_over_long_cpu_numbers_are_invalid_argument(stub: msix_pb2_grpc.MsixServiceStub, cpus: str) -> None:
    """int() refuses more than 4300 digits with ValueError; a reader's Spread dry run reached it (INTERNAL)."""
    for call, request in ((stub.Spread, pb.SpreadRequest(bdf="0000:00:04.0", cpus=cpus, dry_run=True)),
                          (stub.SetAffinity, pb.SetAffinityRequest(bdf="0000:00:04.0", vector=2, cpus=cpus))):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "too long" in err.value.details() and len(err.value.details()) < 300


def test_a_long_socket_path_is_served_or_refused_in_one_line(host_roots: KernelRoots, tmp_path: Path) -> None:
    """sun_path holds 107 bytes. msixd's own sockets beside the public one must fit whenever
    the public one fits (msixd-admin.sock is the longest of them), and a path that cannot fit
    is refused with a message, never a traceback from gRPC."""
    services = Services.build(host_roots, tmp_path / "state.json")
    room = 107 - len(str(tmp_path)) - len("/msixd-admin.sock") - 1
    deep = tmp_path / ("d" * room)
    served = serve(services, deep / "msixd.sock")
    try:
        with grpc.insecure_channel(f"unix:{deep / 'msixd.sock'}") as channel:
            msix_pb2_grpc.MsixServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
    finally:
        served.stop(None)
    too_deep = tmp_path / ("d" * (room + 1))
    with pytest.raises(MsixdError, match="too long"):
        serve(services, too_deep / "msixd.sock")
