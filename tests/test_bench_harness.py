"""The bench harness's own promises, checked without booting a guest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_vm_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests/vm/test_bench_smoke.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MSIXD_BENCH_CACHE": str(tmp_path / "empty"), **env},
    )


def test_unavailable_bench_skips_with_one_reason(tmp_path: Path) -> None:
    done = run_vm_tests(tmp_path, MSIXD_REQUIRE_VM="0")
    assert done.returncode == 0, done.stdout
    assert "6 skipped" in done.stdout
    reasons = {line.split("real-kernel bench unavailable: ")[1]
               for line in done.stdout.splitlines() if "unavailable:" in line}
    assert len(reasons) == 1 and "not fetched (run tests/vm/setup.sh)" in reasons.pop()


def test_unavailable_bench_fails_when_required(tmp_path: Path) -> None:
    done = run_vm_tests(tmp_path, MSIXD_REQUIRE_VM="1")
    assert done.returncode == 1
    assert "6 failed" in done.stdout and "MSIXD_REQUIRE_VM=1" in done.stdout


def test_vm_tests_refuse_to_run_outside_a_guest(tmp_path: Path) -> None:
    """MSIXD_IN_GUEST set on a machine whose kernel command line lacks msixd_bench=1."""
    done = run_vm_tests(tmp_path, MSIXD_IN_GUEST="6.12")
    assert done.returncode == 3 and "refusing to run vm tests" in done.stdout + done.stderr


def test_a_guest_killed_at_its_timeout_takes_its_qemu_along() -> None:
    """vng runs QEMU as a grandchild: killing vng alone left a QEMU running for an hour."""
    from tests.vm.bench import kill_guest

    vng = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    assert vng.stdout is not None
    grandchild = int(vng.stdout.readline())
    kill_guest(vng)
    vng.stdout.close()

    def dead() -> bool:  # a zombie until its new parent reaps it, or gone
        try:
            with open(f"/proc/{grandchild}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not dead() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead(), f"pid {grandchild} outlived the guest it belonged to"
