"""The real-kernel bench: tests marked `vm` run inside QEMU guests on stock Debian kernels.

Two kinds of guest, one boot per kernel each:
- `vm`: the host's own root file system, read-only, with virtme-ng's init
  (bench.py); tests run as root against the guest's /sys, /proc and /dev/vfio.
- `systemd_guest` (implies `vm`): Debian with systemd as PID 1 and the project
  installed by deploy/install.sh, msixd.service enabled (systemd_guest.py);
  tests drive it through systemctl and msixctl, as users do. A new test file
  there needs only `pytestmark = pytest.mark.systemd_guest`.

On the host, each test appears once per kernel (`[k6.1]`, `[k6.12]`) as a
GuestItem: it has no fixtures and runs nothing here. The first one of a kind
and kernel boots a single guest that runs every selected test of that kind and
kernel with pytest; each GuestItem then reports its own test's outcome, with
the guest's output when it failed. Inside the guest (MSIXD_IN_GUEST=<kernel>)
the tests run normally.

Environment:
  MSIXD_BENCH_KERNELS  kernels to run on, comma-separated (default "6.1,6.12")
  MSIXD_REQUIRE_VM=1   a bench that cannot run is a failure, not a skip (CI)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.vm import bench, systemd_guest

IN_GUEST = os.environ.get("MSIXD_IN_GUEST", "")


def pytest_configure(config: pytest.Config) -> None:
    if IN_GUEST and "msixd_bench=1" not in Path("/proc/cmdline").read_text().split():
        # These tests bind devices and write /proc/irq: never outside a bench guest.
        pytest.exit("MSIXD_IN_GUEST is set but this is not a bench guest; refusing to run vm tests", returncode=3)


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.get_closest_marker("systemd_guest") and not item.get_closest_marker("vm"):
        item.add_marker(pytest.mark.vm)  # so -m 'not vm' leaves out every test that boots a guest


def guest_kind(item: pytest.Item) -> str:
    return "systemd" if item.get_closest_marker("systemd_guest") else "host-root"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if definition.get_closest_marker("vm") or definition.get_closest_marker("systemd_guest"):
        kernels = [IN_GUEST] if IN_GUEST else bench.selected_kernels()
        metafunc.parametrize("bench_kernel", kernels, ids=[f"k{k}" for k in kernels])


@pytest.fixture(autouse=True)
def bench_kernel(request: pytest.FixtureRequest) -> str:
    """The kernel a vm test runs on ("6.1", "6.12"); autouse, so every vm test is parametrized by it."""
    return str(getattr(request, "param", IN_GUEST))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_GUEST:
        return
    for position, item in enumerate(items):
        if isinstance(item, pytest.Function) and item.get_closest_marker("vm"):
            guest_item = GuestItem.from_parent(
                item.parent, name=item.name, kernel=item.callspec.params["bench_kernel"], test_file=item.path,
                kind=guest_kind(item),
            )
            for marker in item.iter_markers():  # so -m vm selects it as before
                guest_item.own_markers.append(marker)
                guest_item.keywords[marker.name] = marker
            items[position] = guest_item


class GuestFailure(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class GuestItem(pytest.Item):
    """A vm test as seen from the host: its outcome is the one the guest reported."""

    def __init__(self, *, kernel: str, test_file: Path, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = kernel
        self.test_file = test_file
        self.kind = kind

    @property
    def guest(self) -> str:
        return f"{self.kernel} guest" if self.kind == "host-root" else f"{self.kernel} systemd guest"

    def runtest(self) -> None:
        runs: dict[tuple[str, str], bench.GuestRun] = self.config.stash.setdefault(RUNS_KEY, {})
        run = runs.get((self.kind, self.kernel))
        if run is None:
            problem = bench.why_not_runnable() if self.kind == "host-root" else systemd_guest.why_not_runnable()
            if problem:
                if os.environ.get("MSIXD_REQUIRE_VM") == "1":
                    raise GuestFailure(f"the real-kernel bench cannot run and MSIXD_REQUIRE_VM=1: {problem}")
                pytest.skip(f"real-kernel bench unavailable: {problem}")
            selected = [
                i.nodeid for i in self.session.items
                if isinstance(i, GuestItem) and i.kernel == self.kernel and i.kind == self.kind
            ]
            if self.kind == "host-root":
                run = bench.run_guest(self.kernel, selected)
            else:
                run = systemd_guest.run_guest(self.kernel, selected, self._staged())
            runs[(self.kind, self.kernel)] = run
        result = run.results.get(self.nodeid)
        if result is None:
            raise GuestFailure(
                f"the {self.guest} reported no result for this test.\n{run.summary()}\n"
                f"--- end of the guest console ---\n{run.console_tail()}"
            )
        if result["outcome"] == "skipped":
            pytest.skip(f"in the {self.guest}: {result['reason']}")
        if result["outcome"] == "failed":
            raise GuestFailure(f"failed in the {self.guest} ({run.release}):\n{result['longrepr']}")

    def _staged(self) -> systemd_guest.Staged:
        """The root file system with this checkout installed: once per session, for every kernel."""
        staged = self.config.stash.get(STAGED_KEY, None)
        if staged is None:
            workdir = tempfile.TemporaryDirectory(prefix="msixd-systemd-guest-")
            self.config.add_cleanup(workdir.cleanup)
            staged = self.config.stash[STAGED_KEY] = systemd_guest.stage(Path(workdir.name))
        return staged

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GuestFailure):
            return excinfo.value.text
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.test_file, None, f"{self.name} (in a {self.kernel} guest)"


RUNS_KEY = pytest.StashKey[dict]()
STAGED_KEY = pytest.StashKey[systemd_guest.Staged]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Inside the guest: one JSON line per test for the host to read."""
    out = os.environ.get("MSIXD_GUEST_REPORT")
    if not IN_GUEST or not out:
        return
    if report.when != "call" and report.outcome == "passed":
        return
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
    sections = "\n".join(f"--- {name} ---\n{text}" for name, text in report.sections)
    line = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "reason": reason,
        "longrepr": (str(report.longrepr) + "\n" + sections) if report.failed else "",
        "duration": report.duration,
    }
    with open(out, "a") as stream:
        stream.write(json.dumps(line) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    staged = config.stash.get(STAGED_KEY, None)
    if staged is not None:
        terminalreporter.write_line(
            f"real-kernel bench, systemd guest: root file system copied and deploy/install.sh run in "
            f"{staged.seconds:.1f} s (exit {staged.install_rc})"
        )
    runs: dict[tuple[str, str], bench.GuestRun] = config.stash.get(RUNS_KEY, {})
    for (kind, kernel), run in sorted(runs.items()):
        terminalreporter.write_line(f"real-kernel bench {kernel} ({kind}): {run.summary()}")
