"""The real-kernel bench: tests marked `vm` run inside QEMU guests on stock Debian kernels.

On the host, each vm test appears once per kernel (`[k6.1]`, `[k6.12]`) as a
GuestItem: it has no fixtures and runs nothing here. The first one of a kernel
boots a single guest (bench.py) that runs every selected vm test of that kernel
with pytest, as root, against the guest's own /sys, /proc and /dev/vfio; each
GuestItem then reports its own test's outcome, with the guest's output when it
failed. Inside the guest (MSIXD_IN_GUEST=<kernel>) the tests run normally.

Environment:
  MSIXD_BENCH_KERNELS  kernels to run on, comma-separated (default "6.1,6.12")
  MSIXD_REQUIRE_VM=1   a bench that cannot run is a failure, not a skip (CI)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.vm import bench

IN_GUEST = os.environ.get("MSIXD_IN_GUEST", "")


def pytest_configure(config: pytest.Config) -> None:
    if IN_GUEST and "msixd_bench=1" not in Path("/proc/cmdline").read_text().split():
        # These tests bind devices and write /proc/irq: never outside a bench guest.
        pytest.exit("MSIXD_IN_GUEST is set but this is not a bench guest; refusing to run vm tests", returncode=3)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("vm"):
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
                item.parent, name=item.name, kernel=item.callspec.params["bench_kernel"], test_file=item.path
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

    def __init__(self, *, kernel: str, test_file: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = kernel
        self.test_file = test_file

    def runtest(self) -> None:
        runs: dict[str, bench.GuestRun] = self.config.stash.setdefault(RUNS_KEY, {})
        run = runs.get(self.kernel)
        if run is None:
            problem = bench.why_not_runnable()
            if problem:
                if os.environ.get("MSIXD_REQUIRE_VM") == "1":
                    raise GuestFailure(f"the real-kernel bench cannot run and MSIXD_REQUIRE_VM=1: {problem}")
                pytest.skip(f"real-kernel bench unavailable: {problem}")
            selected = [i for i in self.session.items if isinstance(i, GuestItem) and i.kernel == self.kernel]
            run = runs[self.kernel] = bench.run_guest(self.kernel, [i.nodeid for i in selected])
        result = run.results.get(self.nodeid)
        if result is None:
            raise GuestFailure(
                f"the {self.kernel} guest reported no result for this test.\n{run.summary()}\n"
                f"--- end of the guest console ---\n{run.console_tail()}"
            )
        if result["outcome"] == "skipped":
            pytest.skip(f"in the {self.kernel} guest: {result['reason']}")
        if result["outcome"] == "failed":
            raise GuestFailure(f"failed in the {self.kernel} guest ({run.release}):\n{result['longrepr']}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GuestFailure):
            return excinfo.value.text
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.test_file, None, f"{self.name} (in a {self.kernel} guest)"


RUNS_KEY = pytest.StashKey[dict]()


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
    runs: dict[str, bench.GuestRun] = config.stash.get(RUNS_KEY, {})
    for kernel, run in sorted(runs.items()):
        terminalreporter.write_line(f"real-kernel bench {kernel}: {run.summary()}")
