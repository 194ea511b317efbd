"""32 clients changing vector counts and affinities of the same devices at once.

msixd runs in this process over a copy of a captured tree, with the fake VFIO
(tests/fakes/vfio.py) standing in for the kernel's. Every request must apply or
fail cleanly, and the end state must be the last applied request, the same in
the "kernel" and in the saved state.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel import irq as kirq
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.serving import serve

OWNED = "0000:00:03.0"  # moved to vfio-pci in the copy; IRQs 37-39 are its vectors 0-2
FOREIGN = "0000:00:04.0"  # stays on its kernel driver; IRQs 40-43
CLIENTS, REQUESTS = 32, 15
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-msix", "noresize"])
def test_concurrent_changes_linearize(
    tree: Callable[[str], Path], tmp_path: Path, dynamic: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow kernel: every affinity write takes up to 10 ms, so interleavings happen.
    real_write = kirq.write_affinity
    delays = random.Random(7)

    def slow_write(*args: object) -> None:
        real_write(*args)  # type: ignore[arg-type]
        time.sleep(delays.random() * 0.01)

    monkeypatch.setattr(kirq, "write_affinity", slow_write)
    root = tree("host-6.18")
    move_to_vfio(root, OWNED)
    fake = FakeVfio({OWNED: FakeDevice(table_size=64, dynamic=dynamic)})
    state_file = tmp_path / "state" / "state.json"
    services = Services.build(KernelRoots.under(root), state_file, vfio_api=fake)  # type: ignore[arg-type]
    server = serve(services, tmp_path / "msixd.sock")
    address = f"unix:{tmp_path / 'msixd.sock'}"
    setup = msix_pb2_grpc.MsixServiceStub(grpc.insecure_channel(address))
    assert setup.Enable(pb.EnableRequest(bdf=OWNED, vectors=3)).path == pb.RESIZE_PATH_ENABLE

    transitions: list[tuple[int, int]] = [(0, 3)]
    placed: dict[tuple[str, int], list[str]] = {}
    codes: Counter[grpc.StatusCode] = Counter()
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        stub = msix_pb2_grpc.MsixServiceStub(grpc.insecure_channel(address))
        for _ in range(REQUESTS):
            try:
                if rng.random() < 0.4:
                    vectors = rng.randint(3, 64)
                    answer = stub.Enable(pb.EnableRequest(bdf=OWNED, vectors=vectors), timeout=30)
                    with lock:
                        transitions.append((answer.vectors_before, vectors))
                else:
                    # contend on one vector
                    bdf, vector = rng.choice([(OWNED, 0), (OWNED, 0), (FOREIGN, rng.randint(0, 3))])
                    cpus = rng.choice(["0", "1", "0-1"])
                    stub.SetAffinity(pb.SetAffinityRequest(bdf=bdf, vector=vector, cpus=cpus), timeout=30)
                    with lock:
                        placed.setdefault((bdf, vector), []).append(cpus)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            with lock:
                codes[code] += 1

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    server.stop(None)

    assert sum(codes.values()) == CLIENTS * REQUESTS, "every request was answered"
    assert set(codes) <= ALLOWED, f"unexpected codes: {codes}"
    assert codes[grpc.StatusCode.OK] == CLIENTS * REQUESTS, f"nothing here should fail: {codes}"

    # Resizes: the answers (count found -> count asked) must chain from 0 to the final count.
    balance: Counter[int] = Counter()
    for before, after in transitions:
        if before != after:
            balance[before] += 1
            balance[after] -= 1
    final = len(fake.devices[OWNED].triggers)
    assert {n: b for n, b in balance.items() if b} == ({0: 1, final: -1} if final else {})
    assert sorted(fake.devices[OWNED].triggers) == list(range(final))
    saved = json.loads(state_file.read_text())["devices"][OWNED]
    assert saved["vectors"] == final

    # Placements: what the kernel holds is one of the requests, and for the owned
    # device exactly what the saved state says (no torn kernel/state pair).
    for (bdf, vector), requests in placed.items():
        irq = (37 if bdf == OWNED else 40) + vector
        kernel = (root / f"proc/irq/{irq}/smp_affinity_list").read_text()
        assert kernel in requests
        if bdf == OWNED:
            assert sorted(parse_cpulist(kernel)) == saved["affinities"][str(vector)]
