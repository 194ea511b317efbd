from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msixd.errors import InvalidCpuList
from msixd.kernel.cpulist import MAX_CPUS, format_cpulist, format_cpumask, parse_cpulist, parse_cpumask
from tests.fixturetree import FIXTURES

cpu_sets = st.frozensets(st.integers(min_value=0, max_value=MAX_CPUS - 1), max_size=300)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("", set()),
        ("\n", set()),
        ("0", {0}),
        ("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}),
        ("0-15:2/4", {0, 1, 4, 5, 8, 9, 12, 13}),
        ("2-2", {2}),
    ],
)
def test_parse_cpulist(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("3-1", "reversed"),
        ("0-", "not a CPU number"),
        ("-1", "not a CPU number"),
        ("a", "not a CPU number"),
        ("1,,2", "empty item"),
        ("4294967296", "beyond the largest possible CPU"),
        ("0-3:0/4", "0 < used <= group"),
        ("0-3:5/4", "0 < used <= group"),
        ("0-3:2", "used/group"),
        ("٣", "not a CPU number"),  # a digit to str.isdigit, not to the kernel
    ],
)
def test_parse_cpulist_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidCpuList, match=reason):
        parse_cpulist(text)


@given(cpu_sets)
def test_cpulist_round_trip(cpus: frozenset[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == cpus


@given(cpu_sets, st.integers(min_value=1, max_value=MAX_CPUS))
def test_cpumask_round_trip(cpus: frozenset[int], extra: int) -> None:
    nr_cpu_ids = max(cpus, default=0) + extra
    assert parse_cpumask(format_cpumask(cpus, min(nr_cpu_ids, MAX_CPUS))) == cpus


@pytest.mark.parametrize(
    ("cpus", "nr_cpu_ids", "text"),
    [
        ({0, 1}, 2, "3"),
        ({0}, 8, "01"),
        (set(range(40)), 40, "ff,ffffffff"),
        ({32}, 64, "00000001,00000000"),
        ({0}, 72, "00,00000000,00000001"),
    ],
)
def test_format_cpumask_groups_like_the_kernel(cpus: set[int], nr_cpu_ids: int, text: str) -> None:
    assert format_cpumask(cpus, nr_cpu_ids) == text
    assert parse_cpumask(text) == cpus


@pytest.mark.parametrize("text", ["", "g", "123456789", "ff,,ff", "ff,"])
def test_parse_cpumask_rejects(text: str) -> None:
    with pytest.raises(InvalidCpuList):
        parse_cpumask(text)


def _captured_affinities() -> list[tuple[str, Path]]:
    return [
        (f"{tree.name}:{irq.name}", irq)
        for tree in sorted(FIXTURES.iterdir())
        for irq in sorted((tree / "proc/irq").glob("[0-9]*"))
        if (irq / "smp_affinity").is_file()
    ]


@pytest.mark.parametrize(("name", "irq_dir"), _captured_affinities())
def test_mask_and_list_agree_on_captured_kernels(name: str, irq_dir: Path) -> None:
    """Every captured /proc/irq/N: our mask codec reproduces the kernel's own text."""
    mask = (irq_dir / "smp_affinity").read_text().strip()
    cpus = parse_cpulist((irq_dir / "smp_affinity_list").read_text())
    possible = parse_cpulist((irq_dir.parents[2] / "sys/devices/system/cpu/possible").read_text())
    assert parse_cpumask(mask) == cpus
    assert format_cpumask(cpus, max(possible) + 1) == mask
