"""Every RPC with generated requests, from every kind of caller: no request crashes msixd
(INTERNAL), hangs it, or makes it write anywhere but /proc/irq affinity files, the sysfs bind
files and its state; no caller outside msixd's groups is ever answered OK.

Root calls in this process. A reader (in the socket group), an admin (in both groups) and a
stranger (in neither) are real processes of other users: a relay each (tests/robustness/relay.py,
run with setpriv) connects to msixd as that user, so msixd learns the caller's credentials from
the kernel as it does from any client.
"""

from __future__ import annotations

import grp
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import materialise
from tests.serving import serve

SERVICE = pb.DESCRIPTOR.services_by_name["MsixService"]
BDFS = ["0000:00:0a.0", "0000:00:0b.0", "00:0c.0", "0000:00:01.0", "0000:00:1f.7"]
HOSTILE_TEXTS = ["1" * 5000, "0-" + "9" * 4400, "0-1:1/" + "7" * 4400, ",".join(["0-8191"] * 4000),
                 ",".join(["0-8191:1/1"] * 3000), "0" * 4400 + "1", "x" * 30000]
texts = st.one_of(st.text(max_size=24),
                  st.sampled_from(BDFS + ["../../x", "0-", "3-1", "0-1", "1", "4294967296", ""] + HOSTILE_TEXTS))
numbers = st.one_of(st.integers(0, 70), st.sampled_from([2**31 - 1, 2**32 - 1]))


def request_strategy(method: str) -> st.SearchStrategy:
    descriptor = SERVICE.methods_by_name[method].input_type
    message = getattr(pb, descriptor.name)
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            fields[field.name] = texts
        elif field.type == FieldDescriptor.TYPE_BOOL:
            fields[field.name] = st.booleans()
        elif field.type == FieldDescriptor.TYPE_UINT32:
            fields[field.name] = numbers
        elif field.type == FieldDescriptor.TYPE_BYTES:
            fields[field.name] = st.binary(max_size=256)
        else:
            raise AssertionError(f"{method}.{field.name}: no strategy for this field type; add one")
    required = {}
    if method == "Watch":  # bounded streams only: count 0 means "until cancelled"
        required["count"] = st.integers(1, 2)
        fields.pop("count")
        fields["interval_ms"] = st.sampled_from([0, 50, 100, 200])
    return st.fixed_dictionaries(required, optional=fields).map(lambda values: message(**values))


READERS = grp.getgrnam("users").gr_gid  # the socket group of this test
ADMINS = grp.getgrnam("nogroup").gr_gid  # the admin group of this test


@dataclass(frozen=True)
class Caller:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    examples: int  # generated requests per RPC: root gets the most, it reaches every handler


CALLERS = [
    Caller("root", 0, 0, (), 120),
    Caller("reader", 4242, READERS, (), 40),
    Caller("admin", 4243, 4243, (READERS, ADMINS), 40),
    Caller("stranger", 4244, 4244, (), 25),
]
OTHER_USERS = os.geteuid() == 0 and shutil.which("setpriv") is not None and Path("/usr/bin/python3").exists()


@dataclass(frozen=True)
class Served:
    socket: Path
    root: Path
    scratch: Path


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    scratch = Path(tempfile.mkdtemp(prefix="msixd-fuzz-"))
    scratch.chmod(0o755)  # the relays of other users reach the socket through it
    root = materialise("guest-6.12", scratch)
    fake = FakeVfio({bdf: FakeDevice(table_size=64, dynamic=True) for bdf in ("0000:00:0a.0", "0000:00:0b.0")})
    services = Services.build(KernelRoots.under(root), scratch / "state" / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    running = serve(services, scratch / "msixd.sock", socket_group="users", admin_group="nogroup")
    # Open to everyone here, so that a stranger's requests reach msixd's access check.
    (scratch / "msixd.sock").chmod(0o666)
    yield Served(scratch / "msixd.sock", root, scratch)
    running.stop(None)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def relays(server: Served) -> Iterator[dict[str, Path]]:
    """The socket to call through for each caller: msixd's own for root, a relay running as the user for others."""
    sockets = {"root": server.socket}
    processes = []
    if OTHER_USERS:
        source = (Path(__file__).parent / "relay.py").read_text()
        for caller in CALLERS[1:]:
            directory = server.scratch / f"relay-{caller.name}"
            directory.mkdir()
            os.chown(directory, caller.uid, caller.gid)
            groups = [f"--groups={','.join(map(str, caller.groups))}"] if caller.groups else ["--clear-groups"]
            relay = subprocess.Popen(
                ["setpriv", f"--reuid={caller.uid}", f"--regid={caller.gid}", *groups, "/usr/bin/python3", "-c",
                 source, str(directory / "relay.sock"), str(server.socket)],
                cwd="/", stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"},
            )
            processes.append(relay)
            assert relay.stdout is not None and relay.stdout.readline().split() == ["ready", str(caller.uid)]
            sockets[caller.name] = directory / "relay.sock"
    yield sockets
    for relay in processes:
        relay.kill()
        relay.wait()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def allowed(rel: str) -> bool:
    parts = rel.split("/")
    return (rel.startswith("proc/irq/") and parts[-1] == "smp_affinity_list") or parts[-1] in (
        "driver_override", "drivers_probe", "unbind")


CALLS: dict[tuple[str, str], int] = {}


@pytest.mark.parametrize("caller", CALLERS, ids=[c.name for c in CALLERS])
@pytest.mark.parametrize("method", list(SERVICE.methods_by_name))
def test_rpc_with_generated_requests(server: Served, relays: dict[str, Path], method: str, caller: Caller) -> None:
    if caller.name not in relays:
        pytest.skip("callers other than root need root, setpriv and /usr/bin/python3 to run as other users")
    before = snapshot(server.root)
    answered_ok: list[object] = []
    key = (caller.name, method)

    with grpc.insecure_channel(f"unix:{relays[caller.name]}") as channel:
        stub = msix_pb2_grpc.MsixServiceStub(channel)

        @settings(max_examples=caller.examples, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(request_strategy(method))
        def call(request: object) -> None:
            CALLS[key] = CALLS.get(key, 0) + 1
            try:
                answer = getattr(stub, method)(request, timeout=10)
                if method == "Watch":
                    list(answer)
                answered_ok.append(request)
            except grpc.RpcError as err:
                assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.details()
                assert err.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung on {request}"

        call()
    varied = any(f.type != FieldDescriptor.TYPE_BOOL for f in SERVICE.methods_by_name[method].input_type.fields)
    wanted = caller.examples * 5 // 6 if varied else 1
    assert CALLS[key] >= wanted, f"only {CALLS[key]} {method} requests were generated for {caller.name}"
    print(f"{caller.name} {method}: {CALLS[key]} generated requests, {len(answered_ok)} answered OK")
    if caller.name == "stranger":
        assert not answered_ok, f"a caller in neither group was answered: {answered_ok[:3]}"
    after = snapshot(server.root)
    changed = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
    assert not {rel for rel in changed if not allowed(rel)}, "msixd wrote outside /proc/irq and the bind files"
