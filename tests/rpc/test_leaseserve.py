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

import pytest

from msixctl.lease import LeaseError, lease, request_lease
from msixd.config import LeaseRule
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.gateway import Limits
from msixd.rpc.leaseserve import LeaseServer, parse_request
from msixd.service.leases import Leases
from msixd.service.owner import Owner
from msixd.service.state import StateStore
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.robustness.hostile import run_as, wait_until

BDF = "0000:00:03.0"
GRANTED, STRANGER = 4242, 4243


class Served:
    def __init__(self, root: Path, limits: Limits) -> None:
        move_to_vfio(root, BDF)
        roots = KernelRoots.under(root)
        self.dir = Path(tempfile.mkdtemp(prefix="msixd-lease-"))
        self.dir.chmod(0o755)  # other users reach the socket (mode 0660) only through this
        self.fake = FakeVfio({BDF: FakeDevice(table_size=2048, dynamic=True)})
        self.owner = Owner(roots, StateStore(self.dir / "state.json"), vfio=self.fake)  # type: ignore[arg-type]
        self.leases = Leases(roots, self.owner, rules=(LeaseRule((BDF,), uids=frozenset({GRANTED})),))
        self.path = self.dir / "msixd-lease.sock"
        self.server = LeaseServer(self.path, self.leases, Access(PeerRegistry(), "msixd", "msixd-admin"), limits)
        os.chmod(self.path, 0o666)  # the test's users are in no group of this machine's
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
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
