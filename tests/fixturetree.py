"""Materialise a captured fixture tree (see tests/capture.py) for a test.

Git drops file modes, so the tree is copied into a temporary directory and the
modes recorded in its MODES manifest are put back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if (p / "MODES").is_file())


def materialise(name: str, dest: Path) -> Path:
    """Copy fixture `name` to dest/name with its recorded file modes; return the copy."""
    src = FIXTURES / name
    tree = dest / name
    shutil.copytree(src, tree, symlinks=True)
    for line in (src / "MODES").read_text().splitlines():
        mode, rel = line.split(" ", 1)
        (tree / rel).chmod(int(mode, 8))
    return tree


def move_to_vfio(root: Path, bdf: str, group: int = 7) -> None:
    """Make a captured device look bound to vfio-pci in IOMMU group `group` (for the fake VFIO)."""
    device = root / "sys/bus/pci/devices" / bdf
    (device / "driver").unlink()
    (device / "driver").symlink_to("../../../bus/pci/drivers/vfio-pci")
    (device / "iommu_group").symlink_to(f"../../../kernel/iommu_groups/{group}")
