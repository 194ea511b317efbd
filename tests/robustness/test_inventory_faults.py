"""The inventory over captured trees with kernel files corrupted, truncated, replaced or gone (issue 6).

A listing never fails: a device or vector whose files make no sense is skipped
(and logged); a single-device read answers or raises a typed MsixdError.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msixd.errors import MsixdError
from msixd.kernel.roots import KernelRoots
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
    st.just(("delete", b"")),
    st.just(("directory", b"")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TREES).flatmap(
    lambda name: st.tuples(st.just(name), st.lists(st.tuples(st.sampled_from(TARGETS[name]), damage), min_size=1, max_size=6))))
def test_damaged_trees_never_fail_a_listing(case: tuple[str, list[tuple[str, tuple[str, bytes]]]]) -> None:
    name, damages = case
    root = _pristine(name)
    originals = {rel: ((root / rel).read_bytes(), (root / rel).stat().st_mode) for rel, _ in damages}
    try:
        for rel, (kind, data) in damages:
            _replace(root / rel, kind, data)
        _check(root)
    finally:
        for rel, (content, mode) in originals.items():
            _replace(root / rel, "write", content)
            (root / rel).chmod(mode)


_COPIES: dict[str, Path] = {}


def _pristine(name: str) -> Path:
    """One private copy per tree for the whole run; each example undoes its damage."""
    if name not in _COPIES:
        _COPIES[name] = materialise(name, Path(tempfile.mkdtemp(prefix="msixd-faults-")))
    return _COPIES[name]


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
    inventory = Inventory(KernelRoots.under(root))
    devices = inventory.list_devices(all_devices=True, include_vectors=True)
    inventory.list_domains()
    for device in devices:
        try:
            inventory.get_device(device.pci.bdf)
        except MsixdError:
            pass  # a typed error is an answer
    try:
        inventory.status()
    except MsixdError:
        pass
