"""Access control on the Unix socket, with real processes of other users."""

from __future__ import annotations

import grp
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, msixctl_as

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as other users"),
    pytest.mark.skipif(shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
                       reason="needs setpriv and /usr/bin/python3"),
]
READERS = grp.getgrnam("users").gr_gid  # the socket group of this test
ADMINS = grp.getgrnam("nogroup").gr_gid  # the admin group of this test
STRANGER = 4243


@pytest.fixture
def daemon(tree: Callable[[str], Path]) -> Iterator[tuple[Daemon, Path]]:
    root = tree("host-6.18")  # changes land in this copy, never in /proc
    root.chmod(0o755)
    running = Daemon('socket_group = "users"\nadmin_group = "nogroup"\n', "--root", str(root))
    yield running, root
    running.stop()


def test_socket_is_0660_and_owned_by_the_socket_group(daemon: tuple[Daemon, Path]) -> None:
    stat = daemon[0].socket.stat()
    assert stat.st_mode & 0o777 == 0o660 and stat.st_gid == READERS


def test_admin_socket_is_0660_and_owned_by_the_admin_group(daemon: tuple[Daemon, Path]) -> None:
    stat = daemon[0].socket.with_name("msixd-admin.sock").stat()
    assert stat.st_mode & 0o777 == 0o660 and stat.st_gid == ADMINS


def test_group_member_reads_but_may_not_change(daemon: tuple[Daemon, Path]) -> None:
    running, root = daemon
    sock = str(running.socket)
    listed = msixctl_as(4242, READERS, [], "--socket", sock, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    denied = msixctl_as(4242, READERS, [], "--socket", sock, "affinity", "0000:00:04.0", "2", "0")
    assert denied.returncode == 1
    assert "uid 4242" in denied.stderr and "may not change anything" in denied.stderr
    assert "PERMISSION_DENIED" in denied.stderr
    assert (root / "proc/irq/42/smp_affinity_list").read_text() == "0-1\n"
    log = running.log_text()
    assert '"event": "permission denied"' in log and '"uid": 4242' in log and '"pid": ' in log


def test_admin_group_member_may_change(daemon: tuple[Daemon, Path]) -> None:
    running, root = daemon
    # The socket file admits its group; an admin is in both groups (as the README says).
    done = msixctl_as(4242, 4242, [READERS, ADMINS], "--socket", str(running.socket),
                      "affinity", "0000:00:04.0", "2", "0")
    assert done.returncode == 0, done.stderr
    assert (root / "proc/irq/42/smp_affinity_list").read_text() == "0"
    assert '"event": "affinity"' in running.log_text(), "every change leaves an audit line"


def test_stranger_cannot_even_connect(daemon: tuple[Daemon, Path]) -> None:
    done = msixctl_as(STRANGER, STRANGER, [], "--socket", str(daemon[0].socket), "list")
    assert done.returncode == 3 and "permission denied" in done.stderr and "msixd group" in done.stderr


def test_root_may_change(daemon: tuple[Daemon, Path]) -> None:
    running, root = daemon
    done = msixctl_as(0, 0, [], "--socket", str(running.socket), "affinity", "0000:00:04.0", "3", "1")
    assert done.returncode == 0, done.stderr
    assert (root / "proc/irq/43/smp_affinity_list").read_text() == "1"


def test_backends_are_root_only_and_answer_no_connection_the_gateway_did_not_make(
    daemon: tuple[Daemon, Path],
) -> None:
    """The gRPC servers behind the gateway listen where only root may go, and even root,
    connecting to them directly, is nobody there: identity comes only from the gateway."""
    import grpc

    from msixd.api.msix.v1 import msix_pb2 as pb
    from msixd.api.msix.v1 import msix_pb2_grpc

    socket_path = daemon[0].socket
    backends = socket_path.with_name(".msixd.b")
    assert backends.stat().st_mode & 0o777 == 0o700 and backends.stat().st_uid == 0
    sockets = sorted(backends.iterdir())
    assert [s.name for s in sockets] == ["admin", "reader", "root"]
    for backend in sockets:
        with grpc.insecure_channel(f"unix:{backend}") as channel:
            with pytest.raises(grpc.RpcError) as err:
                msix_pb2_grpc.MsixServiceStub(channel).ListDevices(pb.ListDevicesRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "unidentified connection" in (err.value.details() or "")
