"""The placement reconciler on a private copy of a captured tree (host-6.18): writes land in the copy.

The captured host has a virtio-net (0000:00:03.0, eth0, IRQs 37-39), a virtio-blk
(0000:00:02.0, vda, IRQs 35-36, 36 managed: its smp_affinity_list is 0444), a
virtio device at 0000:00:04.0 (IRQs 40-43: config, rx, tx, event) and 2 CPUs.
"""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from msixd.errors import FailedPrecondition
from msixd.kernel import irq as kirq
from msixd.kernel.roots import KernelRoots
from msixd.kernel.uevent import Lost, Uevent
from msixd.service.policy import PolicyError
from msixd.service.reconciler import Reason, VectorState
from msixd.service.services import Services

VIRTIO = "0000:00:04.0"
NET = "0000:00:03.0"
BLK = "0000:00:02.0"


@pytest.fixture
def root(tree: Callable[[str], Path]) -> Path:
    return tree("host-6.18")


class World:
    def __init__(self, root: Path, state: Path) -> None:
        self.root = root
        self.policy_dir = root / "etc/msixd/policy.d"
        self.policy_dir.mkdir(parents=True)
        self.services = Services.build(KernelRoots.under(root), state / "state.json", policy_dir=self.policy_dir,
                                       irqbalance=False)
        self.reconciler = self.services.reconciler

    def policy(self, text: str, name: str = "10-test.toml") -> None:
        (self.policy_dir / name).write_text(text)

    def affinity(self, irq: int) -> str:
        return (self.root / f"proc/irq/{irq}/smp_affinity_list").read_text().strip()

    def move(self, irq: int, cpus: str) -> None:
        """Someone else writes the file (it is a regular file in the copy)."""
        (self.root / f"proc/irq/{irq}/smp_affinity_list").write_text(cpus + "\n")

    def states(self) -> dict[int, VectorState]:
        return {d.irq: d.state for d in self.reconciler.report().decisions}


@pytest.fixture
def world(root: Path, tmp_path: Path) -> World:
    return World(root, tmp_path)


def audit_lines(events: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e.get("logger") == "msixd.audit"]


def drift(world: World) -> list[Any]:
    with world.reconciler._pass_lock:
        return world.reconciler._drift_pass()


def test_pin_writes_reads_back_and_audits(world: World, logged: list[MutableMapping[str, Any]]) -> None:
    world.policy('[[rule]]\nname = "virtio-rx-tx"\nmatch = { bdf = "0000:00:04.0", actions = "*-[rt]x" }\n'
                 'place = "pin"\ncpus = "1"\n')
    assert world.reconciler.diff() == (), "the running policy is empty until policy.d is read"
    world.reconciler.load_policy()
    assert [d.irq for d in world.reconciler.diff()] == [41, 42]
    applied = world.reconciler.apply()
    assert [(c.irq, c.reason, c.error) for c in applied.corrections] == [(41, Reason.APPLY, ""), (42, Reason.APPLY, "")]
    assert (world.affinity(41), world.affinity(42), world.affinity(40)) == ("1", "1", "0-1")
    assert world.reconciler.diff() == ()
    lines = audit_lines(logged)
    assert [(e["event"], e["irq"], e["rule"], e["cpus"], e["previous"], e["reason"], e["by"]) for e in lines] == [
        ("policy placement", 41, "virtio-rx-tx", "1", "0-1", "apply", "msixd"),
        ("policy placement", 42, "virtio-rx-tx", "1", "0-1", "apply", "msixd"),
    ]
    assert world.reconciler.stats.corrections == {"apply": 2}


def test_a_moved_vector_is_put_back_and_counted_as_drift(world: World, logged: list[MutableMapping[str, Any]]) -> None:
    world.policy('[[rule]]\nname = "rx"\nmatch = { actions = "virtio3-rx" }\nplace = "pin"\ncpus = "1"\n')
    world.reconciler.apply()
    assert drift(world) == [], "nothing moved: nothing done"
    world.move(41, "0")
    (correction,) = drift(world)
    assert (correction.irq, correction.reason, correction.previous, correction.target) == (
        41, Reason.DRIFT, frozenset({0}), frozenset({1}))
    assert world.affinity(41) == "1"
    assert world.reconciler.stats.corrections == {"apply": 1, "drift": 1}
    assert audit_lines(logged)[-1]["reason"] == "drift"


def test_observe_reports_a_move_once_and_leaves_it(world: World, logged: list[MutableMapping[str, Any]]) -> None:
    world.policy('[[rule]]\nname = "rx"\nmatch = { actions = "virtio3-rx" }\nplace = "pin"\ncpus = "1"\n'
                 'on_drift = "observe"\n')
    world.reconciler.apply()
    assert world.affinity(41) == "1", "an observing rule still places at apply"
    world.move(41, "0")
    assert drift(world) == [] and drift(world) == []
    assert world.affinity(41) == "0"
    reports = [e for e in logged if "only observes" in e["event"]]
    assert len(reports) == 1 and reports[0]["cpus"] == "0"
    assert world.states()[41] is VectorState.DRIFTED
    assert world.reconciler.diff() == (), "a drift it only observes is not something a pass would change"
    world.reconciler.apply()
    assert world.affinity(41) == "1", "an apply places it again"


def test_a_managed_irq_is_reported_once_and_never_written(world: World, root: Path,
                                                         logged: list[MutableMapping[str, Any]]) -> None:
    world.policy('[[rule]]\nname = "blk"\nmatch = { block = "vda" }\nplace = "pin"\ncpus = "1"\n')
    before = (root / "proc/irq/36/smp_affinity_list").read_text()
    world.reconciler.apply()
    drift(world)
    world.reconciler.apply()
    assert (root / "proc/irq/36/smp_affinity_list").read_text() == before
    assert world.affinity(35) == "1", "the other vector of the device is placed"
    reports = [e for e in logged if "will not move" in e["event"]]
    assert [(e["irq"], e["reason"]) for e in reports] == [
        (36, "the kernel manages this IRQ's affinity (smp_affinity_list is read-only)")]
    assert world.states()[36] is VectorState.UNCHANGEABLE


def test_a_refused_write_is_not_retried(world: World, monkeypatch: pytest.MonkeyPatch,
                                        logged: list[MutableMapping[str, Any]]) -> None:
    """Before 6.12 a managed IRQ's file is 0644 and the write fails with EIO."""
    writes: list[int] = []
    real = kirq.write_affinity

    def refuse_42(roots: KernelRoots, irq: int, cpulist: str) -> None:
        writes.append(irq)
        if irq == 42:
            raise kirq.AffinityRefused(irq, "Input/output error (managed, per-CPU or no-balancing IRQ)")
        real(roots, irq, cpulist)

    monkeypatch.setattr(kirq, "write_affinity", refuse_42)
    world.policy('[[rule]]\nname = "v"\nmatch = { bdf = "0000:00:04.0" }\nplace = "pin"\ncpus = "1"\n')
    applied = world.reconciler.apply()
    assert [c.irq for c in applied.corrections if c.error] == [42]
    for _ in range(3):
        drift(world)
    assert writes.count(42) == 1
    assert len([e for e in logged if "will not move" in e["event"]]) == 1
    assert world.reconciler.stats.failures == 1


def test_spread_over_local_cpus_minus_isolated_and_banned(world: World, root: Path) -> None:
    world.policy('[[rule]]\nname = "s"\nmatch = { bdf = "0000:00:04.0" }\nplace = "spread"\n')
    world.reconciler.apply()
    assert [world.affinity(i) for i in (40, 41, 42, 43)] == ["0", "1", "0", "1"]
    world.services.placement.banned = frozenset({1})
    world.reconciler.apply()
    assert [world.affinity(i) for i in (40, 41, 42, 43)] == ["0", "0", "0", "0"]
    (root / "sys/devices/system/cpu/isolated").write_text("0\n")
    report = world.reconciler.report()
    assert {d.state for d in report.decisions} == {VectorState.ERROR}
    assert "all offline, isolated, nohz_full or banned" in report.decisions[0].detail


def stat(cpu0_irq: int, cpu1_irq: int) -> str:
    """/proc/stat with these irq times (USER_HZ) for CPUs 0 and 1."""
    return f"cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 {cpu0_irq} 0 0 0 0\ncpu1 0 0 0 0 0 {cpu1_irq} 0 0 0 0\n"


def test_balance_deals_more_vectors_to_the_cpu_with_less_interrupt_time(world: World, root: Path) -> None:
    (root / "proc/stat").write_text(stat(900, 100))
    world.policy('[[rule]]\nname = "b"\nmatch = { bdf = "0000:00:04.0" }\nplace = "balance"\n')
    world.reconciler.apply()
    placed = [world.affinity(i) for i in (40, 41, 42, 43)]
    assert placed.count("1") > placed.count("0"), placed
    # The load changes; the choice stays (a pass that followed the load would be churn).
    (root / "proc/stat").write_text(stat(900, 9000))
    drift(world)
    assert [world.affinity(i) for i in (40, 41, 42, 43)] == placed
    world.move(40, "0-1")
    drift(world)
    assert world.affinity(40) == placed[0], "put back where balance put it"


def test_balance_without_a_load_measurement_is_a_spread(world: World, root: Path) -> None:
    (root / "proc/stat").unlink()
    world.policy('[[rule]]\nname = "b"\nmatch = { bdf = "0000:00:04.0" }\nplace = "balance"\n')
    world.reconciler.apply()
    assert [world.affinity(i) for i in (40, 41, 42, 43)] == ["0", "1", "0", "1"]


def test_first_rule_wins_and_leave_shadows(world: World) -> None:
    world.policy('[[rule]]\nname = "keep-config"\nmatch = { actions = "*-config" }\nplace = "leave"\n', "10-a.toml")
    world.policy('[[rule]]\nname = "all"\nplace = "pin"\ncpus = "1"\n', "20-b.toml")
    world.reconciler.apply()
    assert world.affinity(40) == "0-1" and world.affinity(41) == "1"
    by_irq = {d.irq: d for d in world.reconciler.report(VIRTIO).decisions}
    assert (by_irq[40].rule.name, by_irq[40].state, by_irq[40].shadowed) == ("keep-config", VectorState.LEFT_ALONE,
                                                                             ("all",))
    assert (by_irq[41].rule.name, by_irq[41].shadowed) == ("all", ())


def test_an_interface_selects_its_function(world: World) -> None:
    world.policy('[[rule]]\nname = "eth0"\nmatch = { interface = "eth0" }\nplace = "pin"\ncpus = "0"\n')
    world.reconciler.apply()
    assert {d.bdf for d in world.reconciler.report().decisions} == {NET}
    assert [world.affinity(i) for i in (37, 38, 39)] == ["0", "0", "0"]


def test_cpus_the_rule_cannot_have_are_an_error_and_nothing_is_written(world: World, root: Path) -> None:
    world.policy('[[rule]]\nname = "far"\nmatch = { bdf = "0000:00:04.0" }\nplace = "pin"\ncpus = "5"\n')
    applied = world.reconciler.apply()
    assert applied.corrections == ()
    assert {(d.state, d.detail) for d in applied.decisions} == {(VectorState.ERROR, "rule far: CPU 5 not online")}
    assert world.affinity(41) == "0-1"
    (root / "sys/devices/system/cpu/isolated").write_text("1\n")
    world.policy('[[rule]]\nname = "iso"\nmatch = { bdf = "0000:00:04.0" }\nplace = "pin"\ncpus = "1"\n')
    assert "force = true" in world.reconciler.apply().decisions[0].detail
    world.policy('[[rule]]\nname = "iso"\nmatch = { bdf = "0000:00:04.0" }\nplace = "pin"\ncpus = "1"\nforce = true\n')
    world.reconciler.apply()
    assert world.affinity(41) == "1"


def test_a_vector_placed_by_a_rule_is_not_placed_by_hand(world: World) -> None:
    world.policy('[[rule]]\nname = "rx"\nmatch = { actions = "virtio3-rx" }\nplace = "pin"\ncpus = "1"\n')
    world.reconciler.apply()
    with pytest.raises(FailedPrecondition, match=r"placed by policy rule rx \(.*10-test.toml:1\)"):
        world.services.placement.set_affinity(VIRTIO, 1, "0")
    with pytest.raises(FailedPrecondition, match="placed by policy rule rx"):
        world.services.placement.spread(VIRTIO, dry_run=True)
    assert world.services.placement.set_affinity(VIRTIO, 2, "0").affinity == {0}, "the others stay free"


def test_a_vector_whose_driver_requests_it_later_is_placed_then(world: World, root: Path) -> None:
    saved = root / "saved-41"
    shutil.move(root / "proc/irq/41", saved)  # no handler requested yet: no /proc/irq/41
    world.policy('[[rule]]\nname = "v"\nmatch = { bdf = "0000:00:04.0" }\nplace = "pin"\ncpus = "1"\n')
    world.reconciler.apply()
    assert world.states()[41] is VectorState.NO_HANDLER
    shutil.move(saved, root / "proc/irq/41")
    (correction,) = drift(world)
    assert (correction.irq, correction.reason) == (41, Reason.NEW_VECTOR)
    assert world.affinity(41) == "1"


def test_the_ban_list_follows_what_the_policy_places(world: World) -> None:
    wanted: list[frozenset[int]] = []
    world.services.irqbalance.want = wanted.append  # type: ignore[method-assign]
    world.policy('[[rule]]\nname = "v"\nmatch = { bdf = ["0000:00:04.0", "0000:00:02.0"] }\nplace = "pin"\n'
                 'cpus = "1"\n[[rule]]\nname = "n"\nmatch = { bdf = "0000:00:03.0" }\nplace = "leave"\n')
    world.reconciler.apply()
    assert wanted[-1] == {35, 40, 41, 42, 43}, "placed ones: not the managed IRQ 36, not those left alone"
    world.policy("")
    world.reconciler.apply()
    assert wanted[-1] == frozenset()


def test_a_broken_policy_changes_nothing(world: World) -> None:
    world.policy('[[rule]]\nname = "rx"\nmatch = { actions = "virtio3-rx" }\nplace = "pin"\ncpus = "1"\n')
    world.reconciler.apply()
    world.policy('[[rule]]\nname = "rx"\nplace = "pinn"\n', "20-broken.toml")
    with pytest.raises(PolicyError, match="20-broken.toml, line 3"):
        world.reconciler.apply()
    assert world.reconciler.policy.rules[0].name == "rx"
    assert world.reconciler.claimed(VIRTIO, 1) is not None


def test_a_dry_run_writes_nothing(world: World) -> None:
    world.policy('[[rule]]\nname = "rx"\nmatch = { actions = "virtio3-rx" }\nplace = "pin"\ncpus = "1"\n')
    planned = world.reconciler.apply(dry_run=True)
    assert planned.dry_run and [(d.irq, d.state) for d in planned.decisions] == [(41, VectorState.PENDING)]
    assert world.affinity(41) == "0-1" and world.reconciler.policy.rules == ()
    trial = world.reconciler.apply(("10-test.toml", b'[[rule]]\nname = "t"\nplace = "leave"\n'), dry_run=True)
    assert [r.name for r in trial.policy.rules] == ["t"]


class Events:
    """A uevent source fed by the test."""

    def __init__(self) -> None:
        self.events: queue.Queue[Uevent | Lost] = queue.Queue()

    def receive(self, timeout: float | None) -> Uevent | Lost | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the reconciler did not get there in time"
        time.sleep(0.02)


def test_a_uevent_brings_a_device_back_into_the_policy_at_once(root: Path, tmp_path: Path) -> None:
    """The periodic pass is an hour away: only the uevent can have done it. Its IRQs are banned from
    irqbalance, and placing them by hand is refused, as soon as they are placed."""
    events = Events()
    policy_dir = root / "etc/msixd/policy.d"
    policy_dir.mkdir(parents=True)
    (policy_dir / "10.toml").write_text('[[rule]]\nname = "v"\nmatch = { driver = "virtio-pci", bdf = "*:04.0" }\n'
                                        'place = "pin"\ncpus = "1"\n')
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", policy_dir=policy_dir,
                              interval=3600, irqbalance=False, uevents=events)
    wanted: list[frozenset[int]] = []
    services.irqbalance.want = wanted.append  # type: ignore[method-assign]
    reconciler = services.reconciler
    reconciler.load_policy()
    # The device is unbound: no driver, no IRQs.
    device = root / "sys/bus/pci/devices" / VIRTIO
    (device / "driver").unlink()
    saved = root / "msi_irqs"
    shutil.move(device / "msi_irqs", saved)
    reconciler.start()
    try:
        wait_for(lambda: reconciler.stats.full_passes == 1)
        assert (root / "proc/irq/41/smp_affinity_list").read_text() == "0-1\n"
        (device / "driver").symlink_to("../../../bus/pci/drivers/virtio-pci")
        shutil.move(saved, device / "msi_irqs")
        events.events.put(Uevent("bind", f"/devices/pci0000:00/{VIRTIO}", "pci",
                                 {"PCI_SLOT_NAME": VIRTIO, "DRIVER": "virtio-pci"}))
        wait_for(lambda: (root / "proc/irq/41/smp_affinity_list").read_text() == "1")
        assert reconciler.stats.corrections["hotplug"] == 4
        wait_for(lambda: bool(wanted) and wanted[-1] == {40, 41, 42, 43})
        assert reconciler.claimed(VIRTIO, 1) is not None
    finally:
        reconciler.stop()


def test_a_reload_with_a_broken_file_keeps_the_running_policy(root: Path, tmp_path: Path,
                                                              logged: list[MutableMapping[str, Any]]) -> None:
    policy_dir = root / "etc/msixd/policy.d"
    policy_dir.mkdir(parents=True)
    (policy_dir / "10.toml").write_text('[[rule]]\nname = "v"\nmatch = { bdf = "*:04.0" }\nplace = "pin"\ncpus = "1"\n')
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", policy_dir=policy_dir,
                              interval=3600, irqbalance=False)
    reconciler = services.reconciler
    reconciler.load_policy()
    reconciler.start()
    try:
        wait_for(lambda: reconciler.stats.full_passes == 1)
        (policy_dir / "20.toml").write_text("[[rule]]\nname = 1\n")
        reconciler.reload()
        wait_for(lambda: any(e["event"].startswith("policy reload refused") for e in logged))
        refused = next(e for e in logged if e["event"].startswith("policy reload refused"))
        assert "20.toml, line 2" in refused["error"]
        assert [r.name for r in reconciler.policy.rules] == ["v"]
        (policy_dir / "20.toml").write_text('[[rule]]\nname = "w"\nmatch = { bdf = "*:03.0" }\nplace = "pin"\n'
                                            'cpus = "0"\n')
        reconciler.reload()
        wait_for(lambda: (root / "proc/irq/38/smp_affinity_list").read_text() == "0")
    finally:
        reconciler.stop()


def test_without_uevents_a_drift_pass_finds_a_device_that_was_bound(world: World, root: Path) -> None:
    device = root / "sys/bus/pci/devices" / VIRTIO
    (device / "driver").unlink()
    shutil.move(device / "msi_irqs", root / "msi_irqs")
    world.policy('[[rule]]\nname = "v"\nmatch = { driver = "virtio-pci", bdf = "*:04.0" }\nplace = "pin"\ncpus = "1"\n')
    world.reconciler.apply()
    assert drift(world) == []
    (device / "driver").symlink_to("../../../bus/pci/drivers/virtio-pci")
    shutil.move(root / "msi_irqs", device / "msi_irqs")
    assert {(c.irq, c.reason) for c in drift(world)} == {(irq, Reason.NEW_VECTOR) for irq in (40, 41, 42, 43)}
    assert drift(world) == []


def test_changed_affinities_reads_each_once_and_parses_nothing_in_place(root: Path) -> None:
    from msixd.kernel import vectors

    roots = KernelRoots.under(root)
    (root / "proc/irq/41/smp_affinity_list").write_text("1")  # a regular file: no newline, as written
    shutil.rmtree(root / "proc/irq/42")
    expected = [(40, b"0-1"), (41, b"1"), (42, b"0-1"), (43, b"0"), (42, None), (44, None)]
    assert vectors.changed_affinities(roots, expected) == [42, 43]
    shutil.rmtree(root / "proc/irq")
    assert vectors.changed_affinities(roots, expected) == [40, 41, 42, 43]
