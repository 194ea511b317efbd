"""Adoption from a file descriptor store on real kernels, with a fake systemd (tests/fakesystemd.py).

msixd runs as a process started by the fake systemd (NOTIFY_SOCKET, and the
store handed back with LISTEN_FDS and LISTEN_FDNAMES, as systemd does). On
SIGTERM it leaves the e1000e enabled, its files held by the fake systemd in
this process; the next msixd adopts them, or, when the device's own file was
not kept, closes what it was handed for that device, says why, and restores
the device from its state file. Closing the store (systemctl stop) leaves no
vfio-msix vector. tests/vm/systemd/test_fdstore.py proves the same with the
real systemd.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.service.fdstore import device_name
from tests.e2e.conftest import REPO, wait_serving
from tests.fakesystemd import FakeSystemd
from tests.robustness.hostile import wait_until
from tests.vm import guest

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)
VFIO_ACTION = re.compile(r"vfio-msix\[(\d+)\]\((\S+)\)")


def vfio_vectors(bdf: str) -> dict[int, int]:
    """MSI-X index -> IRQ of the device's vfio-msix handlers in /proc/interrupts."""
    found = {}
    for line in Path("/proc/interrupts").read_text().splitlines()[1:]:
        head, _, _ = line.partition(":")
        match = VFIO_ACTION.search(line)
        if match and match.group(2) == bdf:
            found[int(match.group(1))] = int(head)
    return found


def affinity(irq: int) -> str:
    return Path(f"/proc/irq/{irq}/smp_affinity_list").read_text().strip()


class Generations:
    """One msixd after another, each started by the fake systemd with what its store holds."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "msixd.sock"
        (directory / "msixd.toml").write_text(f'socket = "{self.socket}"\nstate_dir = "{directory / "state"}"\n')
        self.systemd = FakeSystemd(directory)
        self.count = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.count += 1
        self.socket.unlink(missing_ok=True)
        with (self.dir / f"msixd-{self.count}.log").open("wb") as log:
            self.proc = self.systemd.spawn(
                [sys.executable, "-m", "msixd.main", "--config", str(self.dir / "msixd.toml"), "--log-format", "json"],
                env={**os.environ}, stdout=log.fileno(), cwd=str(REPO))
        wait_serving(self.socket, self.proc)  # type: ignore[arg-type]

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(timeout=60) == 0

    def events(self) -> list[dict[str, Any]]:
        text = (self.dir / f"msixd-{self.count}.log").read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def call(self, method: str, request: object) -> Any:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            return getattr(msix_pb2_grpc.MsixServiceStub(channel), method)(request, timeout=60)


@pytest.fixture
def generations() -> Iterator[tuple[Generations, str]]:
    guest.require_bench_guest()
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    with tempfile.TemporaryDirectory(prefix="msixd-fdstore-") as directory:
        run = Generations(Path(directory))
        try:
            run.start()
            run.call("Bind", pb.BindRequest(bdf=bdf))
            run.call("Enable", pb.EnableRequest(bdf=bdf, vectors=3))
            run.call("SetAffinity", pb.SetAffinityRequest(bdf=bdf, vector=1, cpus="1"))
            yield run, bdf
        finally:
            if run.proc is not None and run.proc.poll() is None:
                run.proc.terminate()
                run.proc.wait(timeout=60)
            run.systemd.close()
            wait_until(lambda: not vfio_vectors(bdf), 30, "the store closed: no vfio-msix vector")
            if guest.driver_of(bdf) != before:
                guest.rebind(bdf, before)


def test_sigterm_keeps_the_vectors_and_the_next_msixd_adopts_them(generations: tuple[Generations, str]) -> None:
    run, bdf = generations
    placed = vfio_vectors(bdf)
    assert sorted(placed) == [0, 1, 2] and affinity(placed[1]) == "1"
    run.systemd.wait_for(lambda s: sum(n.startswith("v-") for n in s.names()) == 3, what="three eventfds stored")
    run.stop()
    assert vfio_vectors(bdf) == placed, "no msixd runs, and the kernel still has every vector"
    run.start()
    adopted = [e for e in run.events() if e["event"] == "device adopted from systemd's store"]
    assert [e["bdf"] for e in adopted] == [bdf], run.events()
    assert vfio_vectors(bdf) == placed and affinity(placed[1]) == "1"
    count = run.call("Trigger", pb.TriggerRequest(bdf=bdf, vector=2)).eventfd_count
    assert count >= 1, "the adopted eventfd is the one the kernel signals"


def test_a_device_whose_file_was_not_kept_is_restored_from_the_state_file(
        generations: tuple[Generations, str]) -> None:
    run, bdf = generations
    run.systemd.wait_for(lambda s: device_name(bdf) in s.names(), what="the device file stored")
    run.stop()
    with run.systemd._changed:  # noqa: SLF001 - the store loses the device's file: its last copy closes
        for entry in [e for e in run.systemd.store if e[0] == device_name(bdf)]:
            os.close(entry[1])
            run.systemd.store.remove(entry)
    wait_until(lambda: not vfio_vectors(bdf), 30, "the kernel disabled MSI-X at the device file's last close")
    run.start()
    events = run.events()
    assert not [e for e in events if e["event"] == "device adopted from systemd's store"]
    restored = [e for e in events if e["event"] == "restore" and e.get("bdf") == bdf]
    assert restored, events
    vectors = vfio_vectors(bdf)
    assert sorted(vectors) == [0, 1, 2] and affinity(vectors[1]) == "1"
    run.systemd.wait_for(lambda s: sum(n.startswith("v-") for n in s.names()) == 3 and device_name(bdf) in s.names(),
                         what="the old eventfds removed, the new files stored")
