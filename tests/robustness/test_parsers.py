"""Every parser on arbitrary and truncated kernel text: a typed error or a value, nothing else."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from msixd.config import ConfigError, parse
from msixd.errors import InvalidBdf, InvalidCpuList, KernelFormatError
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.debugfs import parse_irq
from msixd.kernel.irq import _counts
from msixd.kernel.pci import MsixProbe, find_msix, parse_bdf
from tests.fixturetree import FIXTURES

CASES = settings(max_examples=400, deadline=None)
cpu_text = st.one_of(
    st.text(),
    st.from_regex(r"[0-9,\-:/ \n]{0,40}", fullmatch=True),
    st.sampled_from(["0-", "3-1", "4294967296", "-1", "1,,2", "0-15:2/4", "0-7:0/4", "\n", "(null)"]),
)


@CASES
@given(cpu_text)
def test_cpulist(text: str) -> None:
    try:
        cpus = parse_cpulist(text)
    except InvalidCpuList:
        return
    assert all(isinstance(c, int) and 0 <= c < 8192 for c in cpus)


@CASES
@given(st.text(max_size=40))
def test_bdf(text: str) -> None:
    try:
        bdf = parse_bdf(text)
    except InvalidBdf:
        return
    assert len(bdf) == 12 and "/" not in bdf


REAL_CONFIGS = [p.read_bytes() for p in sorted(FIXTURES.glob("*/sys/bus/pci/devices/*/config"))]


@CASES
@given(st.one_of(st.binary(max_size=4096), st.sampled_from(REAL_CONFIGS).flatmap(
    lambda real: st.tuples(st.integers(0, len(real)), st.binary(max_size=64)).map(
        lambda cut: real[: cut[0]] + cut[1]))))
def test_config_space(config: bytes) -> None:
    """Random and truncated-then-corrupted real config spaces: a probe result, never an exception."""
    probe, capability = find_msix(config)
    assert (capability is not None) == (probe is MsixProbe.PRESENT)
    if capability is not None:
        assert 1 <= capability.table_size <= 2048


REAL_DEBUGFS = [p.read_text() for p in sorted((FIXTURES / "debugfs-irqs").glob("*.txt"))]


@CASES
@given(st.one_of(st.text(), st.sampled_from(REAL_DEBUGFS).flatmap(
    lambda real: st.tuples(st.integers(0, len(real)), st.text(max_size=30)).map(lambda cut: real[: cut[0]] + cut[1]))))
def test_debugfs_irq(text: str) -> None:
    info = parse_irq(1, text)
    assert all(isinstance(hwirq, int) for _, _, hwirq in info.chain)


@CASES
@given(st.one_of(st.text(), st.from_regex(r'(\w+ = ("[^"\n]*"|\d+|\[)\n){0,4}', fullmatch=True)))
def test_config_file(text: str) -> None:
    try:
        parse(text)
    except ConfigError as err:
        assert str(err)


# per_cpu_count as the kernel writes it: mostly zeros with a few counts, or dense.
count_lists = st.one_of(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=64),
    st.integers(1, 2048).flatmap(
        lambda n: st.dictionaries(st.integers(0, n - 1), st.integers(1, 2**64 - 1), max_size=6).map(
            lambda hits: [hits.get(cpu, 0) for cpu in range(n)]
        )
    ),
)


@CASES
@given(count_lists)
def test_per_cpu_count_round_trip(counts: list[int]) -> None:
    assert _counts("per_cpu_count", ",".join(map(str, counts))) == tuple(counts)


@CASES
@given(st.one_of(st.text(max_size=60), st.from_regex(r"[0-9,]{0,60}", fullmatch=True),
                 st.from_regex(r"[0-9]{1,3}(,0{1,3}|,[1-9][0-9]{0,2}){0,30}", fullmatch=True)))
def test_per_cpu_count_any_text(text: str) -> None:
    """Exactly what a comma-separated list of decimal numbers means (each an unsigned 64-bit
    count, as the kernel prints them), or the typed error."""
    if not text:
        assert _counts("per_cpu_count", text) == ()
    elif re.fullmatch(r"[0-9]+(,[0-9]+)*", text, flags=re.ASCII) and all(
        len(item) <= 20 and int(item) < 2**64 for item in text.split(",")
    ):
        assert _counts("per_cpu_count", text) == tuple(int(item) for item in text.split(","))
    else:  # not a list of numbers, or a number wider than the API's uint64
        try:
            _counts("per_cpu_count", text)
        except KernelFormatError:
            return
        raise AssertionError(f"{text!r} was accepted")
