"""Placement policy on real kernels, with Debian's real irqbalance running beside msixd.

In each bench guest (6.1 and 6.12): irqbalance (Debian's package, unpacked by
tests/vm/setup.sh, started here and only here) is told to keep its own
placements off CPU 1 (IRQBALANCE_BANNED_CPULIST=1), so it moves to CPU 0 every
IRQ on CPU 1 it has not banned when it rescans. A policy pins the e1000e's
receive and transmit vectors and the nvme's vectors to CPU 1; the nvme's
I/O-queue vectors are managed by the kernel and are reported once as
unchangeable. The tests run in order on one msixd and one irqbalance:

1. without msixd, vectors pinned to CPU 1 by hand move when irqbalance
   rescans (SIGHUP); with msixd's policy they stay, while the e1000e's third
   vector, pinned by hand beside them and not in the policy, moves in the
   same rescan; msixd corrected nothing meanwhile (its count of corrections);
2. a vector moved by hand is put back within the reconcile interval;
3. the nvme unbound from its driver and bound again has its policy re-applied
   at once (a uevent: the interval is an hour again);
4. msixctl diff is empty after convergence, and show marks each vector's rule;
5. a restarted irqbalance gets msixd's bans again;
6. irqbalance's socket can be reached under a read-only /run (the unit's
   ProtectSystem=strict).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from msixctl.main import app
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel import irq as kirq
from msixd.kernel import irqbalance as kib
from msixd.kernel import vectors
from msixd.kernel.roots import KernelRoots
from tests.e2e.conftest import wait_serving
from tests.vm import guest

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)
NVME = (0x1B36, 0x0010)
IRQBALANCE_ENV = Path(os.environ.get("MSIXD_BENCH_CACHE", "/opt/msixd-bench")) / "irqbalance.env"
HOUR = 3600


def nvme_live(bdf: str) -> bool:
    """Whether the function's nvme controller is live (/sys/class/nvme/nvmeN/state)."""
    states = Path(f"/sys/bus/pci/devices/{bdf}/nvme").glob("*/state")
    return any(state.read_text().strip() == "live" for state in states)


def wait_for(what: str, condition: Callable[[], bool], seconds: float = 60.0) -> float:
    """Poll until condition holds; the seconds it took. Fails with `what` after `seconds`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def affinity(irq: int) -> str:
    return Path(f"/proc/irq/{irq}/smp_affinity_list").read_text().strip()


def pin_by_hand(irq: int, cpus: str) -> None:
    Path(f"/proc/irq/{irq}/smp_affinity_list").write_text(cpus)


def vector_irqs(bdf: str) -> dict[int, int]:
    """MSI-X index -> IRQ (the index from the chip and hwirq, as msixd finds it)."""
    found = {}
    for number in guest.msi_irqs(bdf):
        handler = vectors.read_handler(KernelRoots(), number)
        assert handler is not None
        index = kirq.vector_index(bdf, handler.chip_name, handler.hwirq, handler.actions)
        assert index is not None, f"IRQ {number} of {bdf}: no MSI-X index"
        found[index[0]] = number
    return found


class Irqbalance:
    """Debian's irqbalance, in the foreground, passing every second, keeping its placements off CPU 1."""

    def __init__(self, directory: Path) -> None:
        if not IRQBALANCE_ENV.is_file():
            raise AssertionError(f"{IRQBALANCE_ENV} is missing: run tests/vm/setup.sh")
        settings = dict(line.split("=", 1) for line in IRQBALANCE_ENV.read_text().split())
        self.binary = settings["IRQBALANCE"]
        Path("/run/irqbalance").mkdir(exist_ok=True)  # systemd's RuntimeDirectory=irqbalance/
        self.log = directory / "irqbalance.log"
        self.proc = subprocess.Popen([self.binary, "--foreground", "--interval=1"],
                                     env={**os.environ, "IRQBALANCE_BANNED_CPULIST": "1"},
                                     stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        self.socket = Path(f"/run/irqbalance/irqbalance{self.proc.pid}.sock")
        wait_for("irqbalance's control socket", lambda: self.socket.exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log.read_text()[-2000:]

    def banned(self) -> frozenset[int]:
        return kib.setup(str(self.socket), 30).banned_irqs

    def rescan(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Msixd:
    def __init__(self, directory: Path, policy: str, interval: float) -> None:
        self.dir = directory
        (directory / "policy.d").mkdir()
        (directory / "policy.d/10-bench.toml").write_text(policy)
        self.config = directory / "msixd.toml"
        self.configure(interval)
        self.log = directory / "msixd.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "msixd.main", "--config", str(self.config), "--log-format", "json"],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, text=True)
        wait_serving(directory / "msixd.sock", self.proc)
        self.stub = msix_pb2_grpc.MsixServiceStub(grpc.insecure_channel(f"unix:{directory / 'msixd.sock'}"))

    def configure(self, interval: float) -> None:
        self.interval = interval
        self.config.write_text(
            f'socket = "{self.dir / "msixd.sock"}"\nstate_dir = "{self.dir / "state"}"\n'
            f'policy_dir = "{self.dir / "policy.d"}"\npolicy_interval = {interval}\nirqbalance = "ban"\n')

    def reconfigure(self, interval: float) -> None:
        """A new interval, applied by a reload (SIGHUP), which also applies the policy again."""
        before = len(self.events("policy reloaded"))
        self.configure(interval)
        self.proc.send_signal(signal.SIGHUP)
        wait_for("msixd's policy reload", lambda: len(self.events("policy reloaded")) > before)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [e for e in lines if name is None or e["event"] == name]

    def policy(self) -> pb.PolicyReport:
        return self.stub.GetPolicy(pb.GetPolicyRequest(), timeout=60)

    def msixctl(self, *args: str) -> str:
        result = CliRunner().invoke(app, ["--socket", str(self.dir / "msixd.sock"), "--timeout", "60", *args])
        assert result.exit_code == 0, (result.stdout, result.exception)
        return result.stdout

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=90)


class Bench:
    """What the tests share: the devices, irqbalance, msixd."""

    irqbalance: Irqbalance
    msixd: Msixd

    def __init__(self, directory: Path) -> None:
        guest.require_bench_guest()
        self.dir = directory
        self.nic = guest.find_device(*E1000E)
        self.nvme = guest.find_device(*NVME)
        self.drivers = {self.nic: guest.driver_of(self.nic), self.nvme: guest.driver_of(self.nvme)}
        assert self.drivers[self.nvme] == "nvme", "the nvme is on its kernel driver"
        self.interface = guest.netdev_up(self.nic)  # e1000e requests its IRQs when its interface goes up
        wait_for("the e1000e's handlers", lambda: all(Path(f"/proc/irq/{n}").exists()
                                                      for n in guest.msi_irqs(self.nic)))

    @property
    def nic_irqs(self) -> dict[int, int]:
        return vector_irqs(self.nic)

    @property
    def nvme_irqs(self) -> dict[int, int]:
        return vector_irqs(self.nvme)

    def pinned(self) -> dict[str, int]:
        """The vectors the policy pins (and the kernel lets move): e1000e rx and tx, nvme admin queue."""
        nic = self.nic_irqs
        return {"rx": nic[0], "tx": nic[1], "nvme-admin": self.nvme_irqs[0]}

    def control(self) -> int:
        """The e1000e's third vector ("other": link changes), in no rule."""
        return self.nic_irqs[2]


def check_managed(report: pb.PolicyReport, bench: Bench) -> list[int]:
    """The nvme's I/O-queue vectors are managed by the kernel. Since 6.12 their smp_affinity_list is
    read-only: unchangeable without a write. Before, the write fails with EIO: unchangeable once tried,
    except a vector whose kernel-chosen CPU is the rule's already (in place: never written). Returns
    the unchangeable ones."""
    managed = [v for v in report.vectors if v.bdf == bench.nvme and v.vector > 0]
    assert managed, "the nvme has I/O-queue vectors"
    for vector in managed:
        in_place = vector.state == pb.VECTOR_POLICY_STATE_IN_PLACE and list(vector.affinity) == [1]
        assert vector.state == pb.VECTOR_POLICY_STATE_UNCHANGEABLE or in_place, vector
        if vector.state == pb.VECTOR_POLICY_STATE_UNCHANGEABLE:
            assert "manage" in vector.detail, vector.detail
    assert any(v.state == pb.VECTOR_POLICY_STATE_UNCHANGEABLE for v in managed)
    return [v.irq for v in managed if v.state == pb.VECTOR_POLICY_STATE_UNCHANGEABLE]


POLICY = """\
[[rule]]
name = "nic-queues"
match = {{ interface = "{interface}", actions = ["*-rx-*", "*-tx-*"] }}
place = "pin"
cpus = "1"

[[rule]]
name = "nvme"
match = {{ block = "nvme0n*" }}
place = "pin"
cpus = "1"
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp("policy")
    setup = Bench(directory)
    setup.irqbalance = Irqbalance(directory)
    try:
        yield setup
    finally:
        if hasattr(setup, "msixd"):
            setup.msixd.stop()
        setup.irqbalance.stop()
        for bdf, driver in setup.drivers.items():
            if guest.driver_of(bdf) != driver:
                guest.rebind(bdf, driver)


def test_pinned_vectors_stay_when_irqbalance_rescans_and_would_move_without_the_ban(bench: Bench) -> None:
    pinned = bench.pinned()
    # Without msixd: pinned by hand, moved by irqbalance's next rescan.
    for irq in pinned.values():
        pin_by_hand(irq, "1")
    bench.irqbalance.rescan()
    wait_for(f"irqbalance moving {pinned} off CPU 1",
             lambda: all(affinity(irq) != "1" for irq in pinned.values()))

    # With msixd's policy. A drift pass every 2 s: had irqbalance moved one before its ban, msixd
    # would put it back, and its count of corrections would say so.
    bench.msixd = Msixd(bench.dir, POLICY.format(interface=bench.interface), interval=2.0)
    msixd = bench.msixd

    def converged() -> bool:
        report = msixd.policy()
        states = {v.irq: v.state for v in report.vectors}
        return report.irqbalance.state == pb.IRQBALANCE_STATE_BANNED and \
            set(pinned.values()) <= set(report.irqbalance.wanted) and \
            all(states.get(irq) == pb.VECTOR_POLICY_STATE_IN_PLACE for irq in pinned.values())

    wait_for("msixd placing and banning the policy's vectors", converged)
    assert all(affinity(irq) == "1" for irq in pinned.values())
    assert set(pinned.values()) <= bench.irqbalance.banned(), "irqbalance itself says they are banned"
    report = msixd.policy()
    check_managed(report, bench)
    corrections = dict(report.reconciler.corrections)

    control = bench.control()
    pin_by_hand(control, "1")
    bench.irqbalance.rescan()
    wait_for("irqbalance's rescan moving the control vector off CPU 1", lambda: affinity(control) != "1")
    assert {name: affinity(irq) for name, irq in pinned.items()} == {name: "1" for name in pinned}
    assert dict(msixd.policy().reconciler.corrections) == corrections, "the ban kept them, not a correction"


def test_a_vector_moved_by_hand_is_put_back_within_the_interval(bench: Bench) -> None:
    msixd = bench.msixd
    rx = bench.pinned()["rx"]
    wait_for("rx in place after the reload", lambda: affinity(rx) == "1")
    pin_by_hand(rx, "0")
    corrected = len(msixd.events("policy placement"))
    took = wait_for("msixd putting rx back", lambda: affinity(rx) == "1", seconds=30)
    assert took <= msixd.interval + 1.0, f"put back after {took:.2f} s; the interval is {msixd.interval} s"
    # Its audit line follows the write: wait for it.
    wait_for("the correction's audit line", lambda: len(msixd.events("policy placement")) > corrected)
    placed = msixd.events("policy placement")[corrected]
    assert (placed["irq"], placed["reason"], placed["previous"], placed["cpus"], placed["by"]) == (
        rx, "drift", "0", "1", "msixd")
    # Managed vectors: each reported once, whatever the passes since.
    unchangeable = check_managed(msixd.policy(), bench)
    reports = [e["irq"] for e in msixd.events() if e["event"].startswith("policy: the kernel will not move")]
    assert sorted(reports) == sorted(unchangeable), reports


def test_the_nvme_rebound_gets_its_policy_again_at_once(bench: Bench) -> None:
    msixd = bench.msixd
    msixd.reconfigure(HOUR)  # no periodic pass: only the uevents can do it
    Path("/sys/bus/pci/drivers/nvme/unbind").write_text(bench.nvme)
    wait_for("the nvme's vectors freed", lambda: not guest.msi_irqs(bench.nvme))
    Path("/sys/bus/pci/drivers/nvme/bind").write_text(bench.nvme)
    # nvme's probe allocates the admin vector, then frees it and allocates every queue's
    # (drivers/nvme/host/pci.c, nvme_setup_io_queues) before the controller goes live.
    wait_for("the nvme controller live again", lambda: nvme_live(bench.nvme))
    irqs = bench.nvme_irqs
    assert 0 in irqs and Path(f"/proc/irq/{irqs[0]}").exists(), irqs
    admin = irqs[0]
    wait_for("msixd pinning the new admin vector", lambda: affinity(admin) == "1", seconds=30)
    # The audit line follows the write; a uevent made the pass (no periodic pass for an hour).
    wait_for("the placement's audit line, for a hotplug", lambda: any(
        e["irq"] == admin and e["reason"] == "hotplug" for e in msixd.events("policy placement")))
    wait_for("irqbalance told of the new IRQ", lambda: admin in bench.irqbalance.banned(), seconds=30)


def test_diff_is_empty_after_convergence_and_show_marks_the_rules(bench: Bench) -> None:
    msixd = bench.msixd
    wait_for("convergence", lambda: not msixd.stub.DiffPolicy(pb.DiffPolicyRequest(), timeout=60).changes)
    assert msixd.msixctl("diff").strip() == "no changes: every vector is where the policy puts it"
    shown = msixd.msixctl("show", bench.nic)
    rows = {line.split()[0]: line.split()[-1] for line in shown.splitlines() if line.split()[:1] in (["0"], ["2"])}
    assert rows == {"0": "nic-queues", "2": "-"}, shown
    assert "nvme (unchangeable)" in msixd.msixctl("show", bench.nvme)
    overview = msixd.msixctl("policy")
    assert "irqbalance: banned" in overview and "nic-queues" in overview


def test_a_restarted_irqbalance_gets_the_bans_again(bench: Bench) -> None:
    msixd = bench.msixd
    msixd.reconfigure(2.0)  # should the new irqbalance move one before the ban arrives, it is put back
    bench.irqbalance.stop()
    bench.irqbalance = Irqbalance(bench.dir)
    pinned = set(bench.pinned().values())
    wait_for("msixd banning them in the new irqbalance", lambda: pinned <= bench.irqbalance.banned(), seconds=30)
    assert msixd.policy().irqbalance.pid == bench.irqbalance.proc.pid
    wait_for("every pinned vector on CPU 1", lambda: all(affinity(irq) == "1" for irq in pinned), seconds=30)
    corrections = dict(msixd.policy().reconciler.corrections)
    control = bench.control()
    pin_by_hand(control, "1")
    bench.irqbalance.rescan()
    wait_for("the new irqbalance's rescan moving the control vector", lambda: affinity(control) != "1")
    assert all(affinity(irq) == "1" for irq in pinned)
    assert dict(msixd.policy().reconciler.corrections) == corrections


def test_irqbalances_socket_is_reached_under_a_read_only_run(bench: Bench) -> None:
    """ProtectSystem=strict mounts /run read-only for msixd: connect() needs write permission on the
    socket's inode, not a writable mount (net/unix/af_unix.c, unix_find_bsd)."""
    probe = (f"import sys; from msixd.kernel import irqbalance as k; "
             f"print(sorted(k.setup('{bench.irqbalance.socket}', 30).banned_irqs))")
    script = (f"mount -o bind,ro /run /run && ! touch /run/msixd-probe 2>/dev/null && "
              f"{sys.executable} -c \"{probe}\"")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) >= set(bench.pinned().values())


def interrupt_seconds_from_proc_stat() -> dict[int, float]:
    """irq + softirq time per CPU, read here from /proc/stat (fs/proc/stat.c: columns 6 and 7, in USER_HZ)."""
    hz = os.sysconf("SC_CLK_TCK")
    found = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *columns = line.split()
        if name.startswith("cpu") and name != "cpu":
            found[int(name[3:])] = (int(columns[5]) + int(columns[6])) / hz
    return found


BALANCE = """\
[[rule]]
name = "virtio-queues"
match = { driver = "virtio-pci", class = "0x02", actions = ["*-input.*", "*-output.*"] }
place = "balance"
"""


def test_a_balance_rule_weighs_cpus_by_their_interrupt_time_as_the_kernel_counts_it(bench: Bench) -> None:
    """A balance rule reads each CPU's irq + softirq time through psutil: the time msixd measured lies
    between two readings of /proc/stat around it, and the CPU with less of it gets at least as many of
    the virtio-net's queue vectors."""
    msixd = bench.msixd
    trial = bench.dir / "05-balance.toml"
    trial.write_text(BALANCE)
    measured = len(msixd.events("policy: interrupt time per CPU measured"))
    before = interrupt_seconds_from_proc_stat()
    msixd.msixctl("apply", "-f", str(trial))
    after = interrupt_seconds_from_proc_stat()
    wait_for("msixd's measurement in its log",
             lambda: len(msixd.events("policy: interrupt time per CPU measured")) > measured)
    event = msixd.events("policy: interrupt time per CPU measured")[measured]
    assert event["since"] == "boot", "no balance rule measured before in this msixd"
    load = {int(cpu): seconds for cpu, seconds in event["seconds"].items()}
    online = set(before)
    assert set(load) == online and len(online) > 1, (load, before)
    for cpu in online:
        assert before[cpu] - 0.001 <= load[cpu] <= after[cpu] + 0.001, (cpu, before[cpu], load[cpu], after[cpu])
    assert sum(load.values()) > 0, "a booted guest has spent time in interrupts"

    report = msixd.policy()
    placed = [v for v in report.vectors if v.rule == "virtio-queues"]
    assert len(placed) >= 2, placed
    assert all(v.state == pb.VECTOR_POLICY_STATE_IN_PLACE and len(v.affinity) == 1 for v in placed), placed
    assert all(affinity(v.irq) == str(v.affinity[0]) for v in placed)
    counts = {cpu: sum(1 for v in placed if v.affinity[0] == cpu) for cpu in online}
    quietest = min(sorted(online), key=lambda cpu: load[cpu])
    assert all(counts[quietest] >= counts[cpu] for cpu in online), (load, counts)
