"""Placement on a private copy of a captured tree: writes land in the copy, never in /proc."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import FailedPrecondition, InvalidArgument, InvalidCpuList, VectorNotFound
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.irq import AffinityRefused
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from msixd.service.watch import Watcher


@pytest.fixture
def root(tree: Callable[[str], Path]) -> Path:
    return tree("host-6.18")


@pytest.fixture
def services(root: Path, tmp_path: Path) -> Services:
    return Services.build(KernelRoots.under(root), tmp_path / "state.json")


def test_set_affinity_writes_the_list_and_reads_back(services: Services, root: Path) -> None:
    placed = services.placement.set_affinity("0000:00:04.0", 2, "0")
    assert (root / "proc/irq/42/smp_affinity_list").read_text() == "0"
    assert (placed.vector, placed.irq, placed.affinity) == (2, 42, frozenset({0}))


@pytest.mark.parametrize(
    ("cpus", "error", "match"),
    [
        ("7", InvalidArgument, "CPU 7 is not online"),
        ("", InvalidArgument, "empty"),
        ("1-0", InvalidCpuList, "reversed"),
        ("0-", InvalidCpuList, "not a CPU number"),
    ],
)
def test_bad_cpu_lists_change_nothing(services: Services, root: Path, cpus: str, error: type, match: str) -> None:
    before = (root / "proc/irq/42/smp_affinity_list").read_text()
    with pytest.raises(error, match=match):
        services.placement.set_affinity("0000:00:04.0", 2, cpus)
    assert (root / "proc/irq/42/smp_affinity_list").read_text() == before


def test_isolated_cpu_needs_force(services: Services, root: Path) -> None:
    (root / "sys/devices/system/cpu/isolated").write_text("1\n")
    with pytest.raises(FailedPrecondition, match="--force"):
        services.placement.set_affinity("0000:00:04.0", 2, "1")
    assert services.placement.set_affinity("0000:00:04.0", 2, "1", force=True).affinity == {1}


def test_managed_irq_is_refused_with_the_reason(services: Services, root: Path) -> None:
    with pytest.raises(AffinityRefused, match="kernel manages"):
        services.placement.set_affinity("0000:00:02.0", 1, "0")


def test_unknown_vector(services: Services) -> None:
    with pytest.raises(VectorNotFound, match="no MSI-X vector 9"):
        services.placement.set_affinity("0000:00:04.0", 9, "0")


def test_spread_round_robin_over_local_cpus(services: Services, root: Path) -> None:
    cpus, plan = services.placement.spread("0000:00:04.0", dry_run=True)
    assert cpus == {0, 1}
    assert [(p.vector, p.cpu) for p in plan] == [(0, 0), (1, 1), (2, 0), (3, 1)]
    assert (root / "proc/irq/40/smp_affinity_list").read_text() == "0-1\n", "a dry run writes nothing"
    _, applied = services.placement.spread("0000:00:04.0")
    assert all(not p.error for p in applied)
    written = [(root / f"proc/irq/{irq}/smp_affinity_list").read_text() for irq in (40, 41, 42, 43)]
    assert written == ["0", "1", "0", "1"]


def test_spread_skips_managed_vectors(services: Services) -> None:
    _, plan = services.placement.spread("0000:00:02.0", dry_run=True)
    assert [p.vector for p in plan] == [0]


def test_spread_leaves_out_isolated_local_cpus(services: Services, root: Path) -> None:
    (root / "sys/devices/system/cpu/nohz_full").write_text("0\n")
    cpus, plan = services.placement.spread("0000:00:04.0", dry_run=True)
    assert cpus == {1} and {p.cpu for p in plan} == {1}


def test_watch_rates_from_per_cpu_counts(root: Path, tmp_path: Path) -> None:
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json")
    times = iter([1000.0, 1002.0])
    watcher = Watcher(services.inventory, services.owner, clock=lambda: next(times))
    first = watcher.sample("0000:00:04.0")
    counts = root / "sys/kernel/irq/41/per_cpu_count"
    cpu0, cpu1 = (int(c) for c in counts.read_text().split(","))
    counts.write_text(f"{cpu0 + 200},{cpu1}\n")
    second = watcher.sample("0000:00:04.0", first)
    rx = [v for v in second.vectors if v.irq == 41][0]
    assert rx.total == cpu0 + cpu1 + 200 and rx.rate == 100.0 and not rx.from_eventfd


def test_watch_interval_bounds(services: Services) -> None:
    with pytest.raises(InvalidArgument, match="interval"):
        next(services.watcher.stream("0000:00:04.0", 0.01, 1, lambda seconds: True))


def test_banned_cpus_are_refused_even_with_force_and_left_out_of_spread(services: Services) -> None:
    services.placement.banned = frozenset({1})
    with pytest.raises(FailedPrecondition, match="banned"):
        services.placement.set_affinity("0000:00:04.0", 2, "1", force=True)
    cpus, _ = services.placement.spread("0000:00:04.0", dry_run=True)
    assert cpus == {0}


def test_concurrent_placements_leave_kernel_and_state_agreeing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that tears them apart without a lock: A writes the kernel, B writes and
    records, then A records. The first write waits (at most 0.5 s) for B to finish."""
    import threading

    from msixd.kernel import irq as kirq
    from tests.fakes.vfio import FakeDevice, FakeVfio
    from tests.fixturetree import move_to_vfio

    move_to_vfio(root, "0000:00:03.0")
    fake = FakeVfio({"0000:00:03.0": FakeDevice(table_size=8, dynamic=True)})
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    services.owner.enable("0000:00:03.0", 3)
    b_done = threading.Event()
    real_write, first = kirq.write_affinity, []

    def write(roots: KernelRoots, irq: int, cpus: str) -> None:
        real_write(roots, irq, cpus)
        if not first:
            first.append(cpus)
            b_done.wait(0.5)

    monkeypatch.setattr(kirq, "write_affinity", write)
    a = threading.Thread(target=services.placement.set_affinity, args=("0000:00:03.0", 0, "0"))
    a.start()
    while not first:
        pass
    b = threading.Thread(target=lambda: (services.placement.set_affinity("0000:00:03.0", 0, "1"), b_done.set()))
    b.start()
    a.join()
    b.join()
    kernel = (root / "proc/irq/37/smp_affinity_list").read_text()
    assert services.owner.desired()["0000:00:03.0"].affinities[0] == sorted(parse_cpulist(kernel))
