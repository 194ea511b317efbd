"""Fixtures for the tests that run inside the systemd guest (see tests/vm/systemd_guest.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.vm import guest
from tests.vm.systemd import system

# The users of the README's access rules: root, a reader, an admin (who is in
# both groups, to open the socket), and a stranger who is in neither.
USERS = {"reader": ["msixd"], "admin": ["msixd", "msixd-admin"], "stranger": []}


@pytest.fixture(scope="session")
def users() -> dict[str, list[str]]:
    for name, groups in USERS.items():
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            extra = ["-G", ",".join(groups)] if groups else []
            subprocess.run(["useradd", "--no-create-home", "--user-group", *extra, name], check=True)
    return USERS


@pytest.fixture(autouse=True)
def msixd_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with msixd active: one test's failure does not become the next one's."""
    if request.node.get_closest_marker("systemd_guest") and guest.IN_GUEST_KIND == "systemd":
        system.systemctl("start", system.UNIT)
    yield
    if request.node.get_closest_marker("systemd_guest") and guest.IN_GUEST_KIND == "systemd":
        system.systemctl("start", system.UNIT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and guest.IN_GUEST_KIND == "systemd":
        tail = subprocess.run(["journalctl", "-u", system.UNIT, "-n", "25", "--no-pager", "-o", "short-monotonic"],
                              capture_output=True, text=True)
        report.sections.append(("msixd.service's journal, last lines", tail.stdout))
