"""The lease socket with real Unix sockets and processes, msixd's engine on the fake kernel."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from msixctl.lease import LeaseError, lease, request_lease
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.config import LeaseRule
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.gateway import Limits
from msixd.rpc.leaseserve import LeaseServer, parse_request
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.robustness.hostile import run_as, wait_until
from tests.serving import serve

BDF = "0000:00:03.0"
GRANTED, STRANGER = 4242, 4243


class Served:
    """msixd's gRPC server and lease socket over one set of services, on the fake kernel."""

    def __init__(self, root: Path, limits: Limits) -> None:
        move_to_vfio(root, BDF)
        self.roots = roots = KernelRoots.under(root)
        self.dir = Path(tempfile.mkdtemp(prefix="msixd-lease-"))
        self.dir.chmod(0o755)  # other users reach the socket (mode 0660) only through this
        self.fake = FakeVfio({BDF: FakeDevice(table_size=2048, dynamic=True)})
        services = Services.build(roots, self.dir / "state.json", vfio_api=self.fake)  # type: ignore[arg-type]
        self.owner, self.leases = services.owner, services.leases
        self.leases.rules = (LeaseRule((BDF,), uids=frozenset({GRANTED})),)
        self.grpc = serve(services, self.dir / "msixd.sock")
        self.path = self.dir / "msixd-lease.sock"
        self.server = LeaseServer(self.path, self.leases, Access(PeerRegistry(), "msixd", "msixd-admin"), limits)
        os.chmod(self.path, 0o666)  # the test's users are in no group of this machine's
        self.server.start()
        self.channel = grpc.insecure_channel(f"unix:{self.dir / 'msixd.sock'}")
        self.stub = msix_pb2_grpc.MsixServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.server.stop()
        self.grpc.stop(None)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def served(tree: Callable[[str], Path]) -> Iterator[Served]:
    served = Served(tree("host-6.18"), replace(Limits(), connections_per_uid=3, connections_root=3,
                                                              idle_seconds=2.0))
    served.owner.enable(BDF, 8)
    yield served
    served.stop()


def count(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def test_a_lease_carries_live_eventfds_and_ends_with_its_connection(served: Served) -> None:
    with lease(BDF, vectors="2-3", device_fd=True, socket_path=str(served.path)) as held:
        assert (held.vectors, len(held.eventfds)) == ([2, 3], 2) and held.device_fd is not None
        served.owner.trigger(BDF, 3)
        assert count(held.eventfds[1]) == 1, "the eventfd VFIO signals, in this process"
        assert [lease.id for lease in served.leases.list()] == [held.id]
        old = served.fake.devices[BDF].triggers[3]
    wait_until(lambda: not served.leases.list(), 5, "the lease ended with its connection")
    assert served.fake.devices[BDF].triggers[3] != old and sorted(served.owner.counts(BDF)) == list(range(8))


def test_a_revoked_lease_is_told_why(served: Served) -> None:
    held = request_lease(BDF, count=1, socket_path=str(served.path))
    try:
        served.leases.revoke(held.id, "maintenance", by="uid 0")
        assert held.revoked(timeout=5) == "maintenance"
    finally:
        held.close()


def test_more_vectors_than_one_message_carries_arrive_whole(served: Served) -> None:
    with lease(BDF, count=600, grow=True, socket_path=str(served.path)) as held:
        assert len(held.eventfds) == 600 and held.vectors == list(range(600))
        served.owner.trigger(BDF, 599)
        assert count(held.eventfds[599]) == 1


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "one JSON object"),
        (b'{"lease": {"bdf": "00:03.0"}}', "either"),
        (b'{"lease": {"bdf": "00:03.0", "vectors": "3-1"}}', "invalid vector list"),
        (b'{"lease": {"bdf": "00:03.0", "count": 0}}', "1 to 2048"),
        (b'{"lease": {"bdf": "00:03.0", "count": 1}, "grow": "yes"}', "true or false"),
        (b'{"lease": {"bdf": "00:03.0", "count": 1}, "on_return": "keep"}', "own"),
        (b'{"lease": {"bdf": "00:03.0", "count": 1}, "colour": 1}', "unknown key"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(served: Served, line: bytes, says: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(served.path))
        sock.sendall(line + b"\n")
        answer = json.loads(sock.makefile().readline())
    assert answer["ok"] is False and answer["code"] == "INVALID_ARGUMENT" and says in answer["error"], answer
    assert parse_request(b'{"lease": {"bdf": "00:03.0", "vectors": [0, 2]}}').vectors == frozenset({0, 2})


def test_a_silent_connection_is_closed_and_a_lease_never_idles_out(served: Served) -> None:
    with socket.socket(socket.AF_UNIX) as silent, lease(BDF, count=1, socket_path=str(served.path)) as held:
        silent.settimeout(10)
        silent.connect(str(served.path))
        assert silent.recv(1) == b"", "closed after idle_seconds without a request"
        assert held.revoked(timeout=0.5) is None and served.leases.get(held.id) is not None


LEASE_AS_USER = r"""
import os, sys
from msixctl.lease import LeaseError, request_lease
try:
    held = request_lease(sys.argv[1], vectors=sys.argv[2], socket_path=sys.argv[3])
    print("granted", held.id, len(held.eventfds))
except LeaseError as err:
    print("refused", err.code, err)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_the_configuration_decides_for_other_users_by_their_connection(served: Served) -> None:
    granted = run_as(GRANTED, GRANTED, [], LEASE_AS_USER, BDF, "0", str(served.path))
    assert granted.stdout.startswith("granted "), granted.stdout + granted.stderr
    stranger = run_as(STRANGER, STRANGER, [], LEASE_AS_USER, BDF, "1", str(served.path))
    assert stranger.stdout.startswith("refused PERMISSION_DENIED uid 4243 may not lease"), stranger.stdout
    assert served.leases.list() == [], "the granted user's lease ended with its process"


def test_connections_per_uid_are_bounded(served: Served) -> None:
    held = [request_lease(BDF, vectors=[i], socket_path=str(served.path)) for i in range(3)]
    try:
        with pytest.raises(LeaseError) as err:
            request_lease(BDF, vectors=[4], socket_path=str(served.path), timeout=5)
        assert err.value.code == "RESOURCE_EXHAUSTED" and "already holds 3 lease connections" in str(err.value)
    finally:
        for one in held:
            one.close()


def test_the_api_lists_leases_refuses_changes_and_revokes(served: Served) -> None:
    stub = served.stub
    with lease(BDF, vectors="1", socket_path=str(served.path)) as held:
        (listed,) = stub.ListLeases(pb.ListLeasesRequest(bdf="00:03.0")).leases
        assert (listed.id, list(listed.vectors), listed.holder_uid, listed.holder_pid) == (
            held.id, [1], os.getuid(), os.getpid())
        assert listed.on_return == pb.LEASE_RETURN_OWN and list(listed.irqs) == held.irqs
        vector = {v.index: v for v in stub.GetDevice(pb.GetDeviceRequest(bdf=BDF)).vectors}[1]
        assert vector.HasField("lease") and vector.lease.lease == held.id and vector.lease.pid == os.getpid()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Disable(pb.DisableRequest(bdf=BDF, vector=1))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"vector 1 to uid {os.getuid()} (pid {os.getpid()}, lease {held.id})" in (refused.value.details() or "")
        revoked = stub.RevokeLease(pb.RevokeLeaseRequest(lease=held.id, reason="maintenance")).lease
        assert revoked.id == held.id and held.revoked(timeout=5) == "maintenance"
        assert not stub.ListLeases(pb.ListLeasesRequest()).leases
    with pytest.raises(grpc.RpcError) as unknown:
        stub.RevokeLease(pb.RevokeLeaseRequest(lease=held.id))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_leases_are_counted_in_the_metrics(served: Served) -> None:
    from prometheus_client import generate_latest

    from msixd.rpc.metrics import Metrics
    from msixd.service.inventory import Inventory

    metrics = Metrics(Inventory(served.roots, served.owner), served.leases)
    with lease(BDF, count=1, socket_path=str(served.path)) as held:
        text = generate_latest(metrics.registry).decode()
        assert f'msixd_leases_granted_total{{bdf="{BDF}"}} 1.0' in text
        assert f'msixd_leases_held{{bdf="{BDF}"}} 1.0' in text
        served.leases.revoke(held.id, "test", by="uid 0")
    text = generate_latest(metrics.registry).decode()
    assert f'msixd_leases_held{{bdf="{BDF}"}} 0.0' in text and f'msixd_leases_revoked_total{{bdf="{BDF}"}} 1.0' in text


CHILD = r"""
import os, sys
from msixctl.lease import from_environment
held = from_environment()
kinds = [os.readlink(f"/proc/self/fd/{fd}") for fd in held.eventfds]
print(held.vectors, held.irqs, held.device_fd, kinds, os.environ["MSIXD_LEASE_BDF"], flush=True)
sys.exit(7)
"""


def test_msixctl_lease_runs_a_program_with_the_eventfds_and_its_status(served: Served) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "msixctl.main", "--socket", str(served.dir / "msixd.sock"), "lease", BDF,
         "--vectors", "2-3", "--device-fd", "--", sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 7, done.stderr
    shown = {v.index: v.irq for v in served.stub.GetDevice(pb.GetDeviceRequest(bdf=BDF)).vectors}
    irqs = [shown.get(2, 0), shown.get(3, 0)]  # the captured tree has IRQs for the first vectors only
    assert done.stdout.strip() == f"[2, 3] {irqs} 5 ['anon_inode:[eventfd]', 'anon_inode:[eventfd]'] {BDF}"
    assert served.leases.list() == [], "the lease ended with the program"
    refused = subprocess.run(
        [sys.executable, "-m", "msixctl.main", "--socket", str(served.dir / "msixd.sock"), "lease", BDF,
         "--vectors", "9", "--", "true"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "have no trigger" in refused.stderr and "[FAILED_PRECONDITION]" in refused.stderr
