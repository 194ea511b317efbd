"""Identity comes from the connection, not from whoever holds the caller's pid afterwards (guest only:
it sets the guest's /proc/sys/kernel/ns_last_pid to land a process on a chosen pid).

A reader connects while msixd is stopped (SIGSTOP: the connection waits in the
listen queue, as it would on a busy daemon), hands the connection to a child
and exits; a process of the admin group is made to land on the freed pid;
then msixd accepts. The child's calls must be a reader's: the kernel recorded
the reader's credentials when it connected (SO_PEERCRED, SO_PEERGROUPS).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.e2e.daemon import Daemon
from tests.robustness.hostile import python_env, wait_until
from tests.vm import guest

pytestmark = pytest.mark.vm

READERS, ADMINS = 100, 50  # "users" and "staff", as the hostile-user tests use them
READER, ADMIN = (4242, READERS), (4243, ADMINS)
E1000E = (0x8086, 0x10D3)

# Runs as the reader: connect, fork a child that keeps the connection and relays it to RELAY, exit.
HANDOFF = r"""
import os, socket, sys, threading
target, relay = sys.argv[1], sys.argv[2]
conn = socket.socket(socket.AF_UNIX)
conn.connect(target)
if os.fork():
    print(os.getpid(), flush=True)
    os._exit(0)
os.setsid()
quiet = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):  # let the parent's caller see the end of its output
    os.dup2(quiet, fd)
listener = socket.socket(socket.AF_UNIX)
listener.bind(relay)
os.chmod(relay, 0o777)
listener.listen(1)
client, _ = listener.accept()
def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
threading.Thread(target=pump, args=(client, conn), daemon=True).start()
pump(conn, client)
"""


def land_on(pid: int) -> subprocess.Popen[str]:
    """A process of the admin group on exactly `pid`."""
    for _ in range(20):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(["setpriv", f"--reuid={ADMIN[0]}", f"--regid={ADMIN[1]}", f"--groups={ADMINS}",
                                 "sleep", "120"], text=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError(f"could not land a process on pid {pid}")


def test_a_reader_is_a_reader_even_when_an_admin_lands_on_its_pid() -> None:
    guest.require_bench_guest()
    daemon = Daemon('socket_group = "users"\nadmin_group = "staff"\n')
    shared = Path(tempfile.mkdtemp(prefix="msixd-relay-"))  # not under pytest's 0700 directory
    shared.chmod(0o777)
    relay = shared / "relay.sock"
    admin = None
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    try:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        reader = subprocess.run(
            ["setpriv", f"--reuid={READER[0]}", f"--regid={READER[1]}", "--clear-groups", "/usr/bin/python3",
             "-c", HANDOFF, str(daemon.socket), str(relay)],
            capture_output=True, text=True, timeout=60, env=python_env(), cwd="/",
        )
        reader_pid = int(reader.stdout.strip())  # exited and reaped; its child holds the connection
        admin = land_on(reader_pid)

        def groups() -> list[str]:
            status = Path(f"/proc/{reader_pid}/status").read_text()
            return next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]

        wait_until(lambda: groups() == [str(ADMINS)], 30, "the trap is set: the reader's pid is an admin's now")
        os.kill(daemon.proc.pid, signal.SIGCONT)
        wait_until(relay.exists, 30, "the reader's child relays its connection")
        with grpc.insecure_channel(f"unix:{relay}") as channel:
            stub = msix_pb2_grpc.MsixServiceStub(channel)
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=60).daemon_version, "a reader may read"
            with pytest.raises(grpc.RpcError) as err:
                stub.Bind(pb.BindRequest(bdf=bdf), timeout=60)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
        assert f"uid {READER[0]}" in (err.value.details() or "")
        assert guest.driver_of(bdf) == before, "nothing was bound"
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
        if admin is not None:
            admin.kill()
            admin.wait()
        daemon.stop()
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
