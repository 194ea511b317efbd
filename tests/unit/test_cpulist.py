from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msixd.errors import InvalidCpuList, KernelFormatError
from msixd.kernel.cpulist import MAX_CPUS, format_cpulist, parse_cpulist, parse_kernel_cpulist

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


@pytest.mark.parametrize(
    "text",
    ["1" * 5000, "0-" + "9" * 5000, "0-3:" + "1" * 5000 + "/4", "0-3:1/" + "4" * 5000, "0" * 4301 + "1"],
)
def test_over_long_numbers_are_refused_before_int(text: str) -> None:
    """int() refuses more than 4300 decimal digits with ValueError: such text must never reach it."""
    with pytest.raises(InvalidCpuList, match="too long"):
        parse_cpulist(text)


def test_many_wide_items_cost_little() -> None:
    """Every item may name all 8192 CPUs: a 64 KiB list of them is still one quick answer."""
    for text in (",".join(["0-8191"] * 9000), ",".join(["0-8191:1/1"] * 5900), ",".join(["0-8191:3/7"] * 5900)):
        started = time.perf_counter()
        assert len(parse_cpulist(text)) == len(parse_cpulist(text.split(",")[0]))
        assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("text", "cpus"), [("0-8191:3/7", {c for c in range(8192) if c % 7 < 3}),
                                              ("5-20:2/3", {5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20}),
                                              ("8191", {8191}), ("0-3,2-5", {0, 1, 2, 3, 4, 5})])
def test_strides_and_overlaps(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


def test_the_error_quotes_a_long_list_shortened() -> None:
    with pytest.raises(InvalidCpuList) as err:
        parse_cpulist("x" * 60000)
    assert len(str(err.value)) < 200


def test_kernel_text_that_is_no_cpulist_names_the_file() -> None:
    assert parse_kernel_cpulist("/sys/devices/system/cpu/online", "0-3\n") == {0, 1, 2, 3}
    with pytest.raises(KernelFormatError, match=r"/sys/devices/system/cpu/online: range '3-1' is reversed"):
        parse_kernel_cpulist("/sys/devices/system/cpu/online", "3-1")
