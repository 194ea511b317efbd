"""Fixtures shared by the whole suite: captured kernel trees, materialised per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.kernel.roots import KernelRoots
from tests.fixturetree import materialise


@pytest.fixture
def tree(tmp_path: Path) -> Callable[[str], Path]:
    """tree("host-6.18") -> a private copy of that captured tree, file modes restored."""
    return lambda name: materialise(name, tmp_path)


@pytest.fixture
def host_roots(tree: Callable[[str], Path]) -> KernelRoots:
    return KernelRoots.under(tree("host-6.18"))
