"""A hostile local user, as real processes: floods of connections, slow clients, gRPC calls as any uid.

Every attacker runs as its own process under setpriv with the uid, gid and
groups the test names, so msixd sees a real peer (SO_PEERCRED, SO_PEERGROUPS)
and the kernel applies the socket files' permissions to it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
NOBODY = (65534, 65534)

# Opens COUNT connections to TARGET ("tcp:host:port" or "unix:path") and holds them until stdin closes.
# MODE "idle" sends nothing; "partial" sends the first bytes of an HTTP/2 preface and stops;
# "half-closed" sends nothing and shuts its write side down.
_FLOOD = r"""
import resource, socket, sys, time
target, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 20  # a listener that stopped accepting makes every connect wait
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, refused = [], 0
for _ in range(count):
    if time.monotonic() > deadline:
        break
    kind, _, where = target.partition(":")
    if kind == "tcp":
        host, _, port = where.rpartition(":")
        sock, address = socket.socket(socket.AF_INET, socket.SOCK_STREAM), (host, int(port))
    else:
        sock, address = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), where
    sock.settimeout(0.5)
    try:
        sock.connect(address)
    except OSError:
        refused += 1
        sock.close()
        continue
    if mode == "partial":
        try:
            sock.send(b"PRI * HTTP/2.0\r\n")
        except OSError:
            pass
    elif mode == "half-closed":
        sock.shutdown(socket.SHUT_WR)
    held.append(sock)
print(f"ready {len(held)} {refused}", flush=True)
sys.stdin.read()
"""


def _ready(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """The first line the attacker prints, waiting at most `timeout` seconds for it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"the attacker did not get going within {timeout:g} s")
    return proc.stdout.readline()


def _identity(uid: int, gid: int, groups: list[int]) -> list[str]:
    return [f"--reuid={uid}", f"--regid={gid}"] + (
        [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    )


def python_env() -> dict[str, str]:
    """The system python3 with this checkout and the venv's packages, for other users."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}


@contextmanager
def flood(target: str, count: int, uid: int, gid: int, groups: list[int] | None = None,
          mode: str = "idle") -> Iterator[tuple[int, int]]:
    """Hold `count` connections to target as uid/gid; yields (held, refused) once they are open."""
    proc = subprocess.Popen(
        ["setpriv", *_identity(uid, gid, groups or []), "/usr/bin/python3", "-c", _FLOOD, target, str(count), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=python_env(),
    )
    try:
        line = _ready(proc).split()
        assert line and line[0] == "ready", f"flood did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield int(line[1]), int(line[2])
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_as(uid: int, gid: int, groups: list[int], code: str, *args: str,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet (with grpc and msixd.api importable) as another user."""
    return subprocess.run(
        ["setpriv", *_identity(uid, gid, groups), "/usr/bin/python3", "-c", code, *args],
        capture_output=True, text=True, timeout=timeout, cwd="/", env=python_env(),
    )


@contextmanager
def background_as(uid: int, gid: int, groups: list[int], code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Like run_as, in the background; the snippet prints "ready" when it holds what it opened."""
    proc = subprocess.Popen(
        ["setpriv", *_identity(uid, gid, groups), "/usr/bin/python3", "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=python_env(),
    )
    try:
        line = _ready(proc)
        assert line.startswith("ready"), f"did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        proc.started = int(line.split()[1]) if len(line.split()) > 1 else 0  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening(pid: int) -> tuple[list[int], list[str]]:
    """TCP ports and Unix socket paths the process listens on."""
    process = psutil.Process(pid)
    ports = sorted({c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN})
    paths = sorted({c.laddr for c in process.net_connections("unix") if c.laddr and c.status == psutil.CONN_NONE
                    and not c.raddr})
    return ports, [p for p in paths if isinstance(p, str)]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return psutil.Process(pid).num_threads()


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll predicate() until it is true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")

