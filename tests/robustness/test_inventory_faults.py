"""The inventory over captured trees with kernel files corrupted, truncated, replaced or gone.

A listing never fails: a device or vector whose files make no sense is skipped
(and logged); a single-device read answers or raises a typed MsixdError.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msixd.errors import MsixdError
from msixd.kernel.roots import KernelRoots
from msixd.rpc import convert
from msixd.service.inventory import Inventory
from tests.fixturetree import FIXTURES, materialise

TREES = ["host-6.18", "guest-6.1", "guest-6.12"]


def _targets(name: str) -> list[str]:
    """Files msixd reads in that tree, relative to it."""
    root = FIXTURES / name
    patterns = ["sys/bus/pci/devices/*/*", "sys/bus/pci/devices/*/msi_irqs/*", "sys/kernel/irq/*/*",
                "proc/irq/*/*", "sys/devices/system/cpu/*", "proc/sys/kernel/osrelease"]
    return sorted(str(p.relative_to(root)) for pattern in patterns for p in root.glob(pattern) if p.is_file())


TARGETS = {name: _targets(name) for name in TREES}
damage = st.one_of(
    st.binary(max_size=300).map(lambda b: ("write", b)),
    st.sampled_from([b"", b"\n", b"-1\n", b"4294967296\n", b"0-\n", b"3-1\n", b"x,y\n", b"1,2,3,4,5,6,7,8,9\n"]).map(
        lambda b: ("write", b)),
    # Numbers no kernel writes: more digits than int() converts, and past every field's width.
    st.sampled_from([b"9" * 5000 + b"\n", b"0," * 3 + b"7" * 4400 + b"\n", b"18446744073709551616\n",
                     b"-2147483649\n", b"0x" + b"f" * 5000 + b"\n"]).map(lambda b: ("write", b)),
    st.just(("delete", b"")),
    st.just(("directory", b"")),
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """pristine(name): one private copy per tree for the module (in pytest's temporary
    directory); each example undoes its damage."""
    copies: dict[str, Path] = {}

    def copy(name: str) -> Path:
        if name not in copies:
            copies[name] = materialise(name, tmp_path_factory.mktemp("faults"))
        return copies[name]

    return copy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(TREES).flatmap(
    lambda name: st.tuples(
        st.just(name), st.lists(st.tuples(st.sampled_from(TARGETS[name]), damage), min_size=1, max_size=6))))
def test_damaged_trees_never_fail_a_listing(
    pristine: Callable[[str], Path], case: tuple[str, list[tuple[str, tuple[str, bytes]]]]
) -> None:
    name, damages = case
    root = pristine(name)
    originals = {rel: ((root / rel).read_bytes(), (root / rel).stat().st_mode) for rel, _ in damages}
    try:
        for rel, (kind, data) in damages:
            _replace(root / rel, kind, data)
        _check(root)
    finally:
        for rel, (content, mode) in originals.items():
            _replace(root / rel, "write", content)
            (root / rel).chmod(mode)


def _replace(path: Path, kind: str, data: bytes) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "write":
        path.write_bytes(data)
    elif kind == "directory":
        path.mkdir()


def _check(root: Path) -> None:
    """Every answer also becomes its API message: a value past a proto field's width would fail there."""
    inventory = Inventory(KernelRoots.under(root))
    devices = inventory.list_devices(all_devices=True, include_vectors=True)
    for device in devices:
        convert.device(device)
    for domain in inventory.list_domains():
        convert.domain(domain)
    for device in devices:
        try:
            convert.device(inventory.get_device(device.pci.bdf))
        except MsixdError:
            pass  # a typed error is an answer
    try:
        convert.status(inventory.status())
    except MsixdError:
        pass


# Numbers no kernel writes: more digits than int() converts, and past each field's width.
LONG_NUMBERS = [b"9" * 5000 + b"\n", b"0,0,0," + b"7" * 4400 + b"\n", b"18446744073709551616\n", b"-2147483649\n",
                b"4294967296\n", b"0x" + b"f" * 5000 + b"\n"]


def _one_per_kind(name: str) -> list[str]:
    """One file of each name (vendor, hwirq, per_cpu_count, node, ...): the parser is per name, not per file.
    IRQ files are taken from an MSI-X vector's IRQ: those are the ones a listing reads."""
    vectors = {p.name for p in (FIXTURES / name).glob("sys/bus/pci/devices/*/msi_irqs/*")}
    seen: dict[str, str] = {}
    for rel in TARGETS[name]:
        parts = rel.split("/")
        if parts[1] in ("irq", "kernel") and parts[-2].isdigit() and parts[-2] not in vectors:
            continue
        kind = "/".join([*parts[:2], "N" if parts[-1].isdigit() else parts[-1]])
        seen.setdefault(kind, rel)
    return sorted(seen.values())


@pytest.mark.parametrize("name", ["host-6.18", "guest-6.12"])
def test_numbers_past_any_width_never_fail_a_listing(pristine: Callable[[str], Path], name: str) -> None:
    """Every file, each number: the listing answers and becomes its API message (no ValueError from
    int() or from a proto field too narrow for the value)."""
    root = pristine(name)
    for rel in _one_per_kind(name):
        original, mode = (root / rel).read_bytes(), (root / rel).stat().st_mode
        try:
            for number in LONG_NUMBERS:
                _replace(root / rel, "write", number)
                _check(root)
        finally:
            _replace(root / rel, "write", original)
            (root / rel).chmod(mode)


def test_an_msi_irqs_entry_named_past_32_bits_is_skipped(pristine: Callable[[str], Path]) -> None:
    root = pristine("host-6.18")
    entry = root / "sys/bus/pci/devices/0000:00:04.0/msi_irqs" / ("9" * 200)
    entry.write_text("msix\n")
    try:
        _check(root)
        device = Inventory(KernelRoots.under(root)).get_device("0000:00:04.0")
        assert sorted(v.irq for v in device.vectors) == [40, 41, 42, 43]
    finally:
        entry.unlink()


@pytest.mark.parametrize("index", ["4294967296", "2048", "9" * 5000])
def test_a_vfio_handler_naming_an_index_past_the_msix_table_is_not_believed(
    pristine: Callable[[str], Path], index: str
) -> None:
    """vfio-pci names its handlers "vfio-msix[<index>](<bdf>)"; an index no MSI-X table has is not one."""
    root = pristine("guest-6.12")
    actions = root / "sys/kernel/irq/41/actions"
    original = actions.read_bytes()
    actions.write_text(f"vfio-msix[{index}](0000:00:0a.0)\n")
    try:
        _check(root)
        device = Inventory(KernelRoots.under(root)).get_device("0000:00:0a.0")
        assert all(v.index < 2048 for v in device.vectors)
    finally:
        actions.write_bytes(original)


def test_counts_summing_past_64_bits_skip_the_vector_not_the_answer(pristine: Callable[[str], Path]) -> None:
    """Each count fits the API's uint64, their sum (total_count) would not: the vector is skipped
    as unreadable, never an internal error while the answer is built."""
    root = pristine("host-6.18")
    counts = root / "sys/kernel/irq/29/per_cpu_count"
    original = counts.read_bytes()
    counts.write_text(f"{2**64 - 1},1\n")
    try:
        _check(root)
        device = Inventory(KernelRoots.under(root)).get_device("0000:00:01.0")
        assert [v.irq for v in device.vectors] == [28, 30, 31, 32]
        convert.device(device)
    finally:
        counts.write_bytes(original)
