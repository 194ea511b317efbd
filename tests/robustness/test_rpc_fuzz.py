"""Every RPC with generated requests (issue 6): no request crashes msixd (INTERNAL), hangs it,
or makes it write anywhere but /proc/irq affinity files, the sysfs bind files and its state."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
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
texts = st.one_of(st.text(max_size=24), st.sampled_from(BDFS + ["../../x", "0-", "3-1", "0-1", "1", "4294967296", ""]))
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


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[msix_pb2_grpc.MsixServiceStub, Path]]:
    scratch = Path(tempfile.mkdtemp(prefix="msixd-fuzz-"))
    root = materialise("guest-6.12", scratch)
    fake = FakeVfio({bdf: FakeDevice(table_size=64, dynamic=True) for bdf in ("0000:00:0a.0", "0000:00:0b.0")})
    services = Services.build(KernelRoots.under(root), scratch / "state" / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    running = serve(services, scratch / "msixd.sock")
    with grpc.insecure_channel(f"unix:{scratch / 'msixd.sock'}") as channel:
        yield msix_pb2_grpc.MsixServiceStub(channel), root
    running.stop(None)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def allowed(rel: str) -> bool:
    parts = rel.split("/")
    return (rel.startswith("proc/irq/") and parts[-1] == "smp_affinity_list") or parts[-1] in (
        "driver_override", "drivers_probe", "unbind")


CALLS: dict[str, int] = {}


@pytest.mark.parametrize("method", list(SERVICE.methods_by_name))
def test_rpc_with_generated_requests(server: tuple[msix_pb2_grpc.MsixServiceStub, Path], method: str) -> None:
    stub, root = server
    before = snapshot(root)

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(request_strategy(method))
    def call(request: object) -> None:
        CALLS[method] = CALLS.get(method, 0) + 1
        try:
            answer = getattr(stub, method)(request, timeout=10)
            if method == "Watch":
                list(answer)
        except grpc.RpcError as err:
            assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.details()
            assert err.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung on {request}"

    call()
    varied = any(f.type != FieldDescriptor.TYPE_BOOL for f in SERVICE.methods_by_name[method].input_type.fields)
    assert CALLS[method] >= (100 if varied else 1), f"only {CALLS[method]} {method} requests were generated"
    print(f"{method}: {CALLS[method]} generated requests")
    after = snapshot(root)
    changed = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
    assert not {rel for rel in changed if not allowed(rel)}, "msixd wrote outside /proc/irq and the bind files"
