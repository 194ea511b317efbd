"""Fixtures shared by the whole suite: captured kernel trees, materialised per test."""

from __future__ import annotations

import stat
import sys
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


def closed_to_others() -> str:
    """Why other users cannot import this checkout and its venv ('' when they can). Several tests run
    msixctl or an attacker as an unprivileged user (setpriv) with the system python3 and this
    checkout on PYTHONPATH: a checkout under a 0700 directory fails them all alike."""
    for path in (Path(__file__).resolve().parent.parent, Path(sys.prefix).resolve()):
        for part in (path, *path.parents):
            if not part.stat().st_mode & stat.S_IXOTH:
                return (f"{part} (mode {stat.S_IMODE(part.stat().st_mode):o}) cannot be entered by other users, so "
                        "the tests that run code as an unprivileged user will fail with ModuleNotFoundError: "
                        "put the checkout where others may read it (chmod o+rx)")
    return ""


def pytest_report_header() -> str:
    return f"warning: {closed_to_others()}" if closed_to_others() else ""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if closed_to_others():
        terminalreporter.write_line(f"warning: {closed_to_others()}", yellow=True, bold=True)
