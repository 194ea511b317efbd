"""Boot a stock Debian kernel under QEMU (virtme-ng) and run vm tests inside it.

The guest boots on the host's own root file system, read-only, so it sees this
checkout and its virtual environment. The only way out is a directory shared
read-write (vng --rwdir /mnt=<host tmp dir>): the guest script writes its exit
status, the kernel release, its uptime when tests start, and one JSON line per
test there. vng's own exit status means nothing in console mode (255 even on
success) and is not used.

Guest topology (the QEMU command line below): 2 CPUs, 2 GiB; an Intel IOMMU
with interrupt remapping, listed before the devices it covers; an e1000e (5
MSI-X vectors, can raise real interrupts), an nvme with a 2048-entry MSI-X table (the most
PCI allows; more than the guest's CPUs have interrupt vectors for),
and a virtio-net-pci with 6 vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MSIXD_BENCH_CACHE", "/opt/msixd-bench"))
KERNELS = ("6.1", "6.12")
GUEST_TIMEOUT = float(os.environ.get("MSIXD_BENCH_TIMEOUT", "900"))
GUEST_OUT = "/mnt"  # must exist on the host too: vng binds the host dir there


def selected_kernels() -> list[str]:
    wanted = os.environ.get("MSIXD_BENCH_KERNELS", ",".join(KERNELS))
    return [k.strip() for k in wanted.split(",") if k.strip()]


def kernel_images() -> dict[str, Path]:
    """kernels.env written by tests/vm/setup.sh: KERNEL_6_1=/path/vmlinuz-..."""
    images = {}
    env = CACHE / "kernels.env"
    if env.is_file():
        for line in env.read_text().splitlines():
            name, _, path = line.partition("=")
            images[name.removeprefix("KERNEL_").replace("_", ".")] = Path(path)
    return images


def vng_binary() -> str | None:
    local = Path(sys.executable).parent / "vng"
    return str(local) if local.exists() else shutil.which("vng")


def why_not_runnable() -> str:
    """Empty when guests can boot here; otherwise the one-line reason."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (the guest's devices and /lib/modules need it; run sudo tests/run)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (run tests/vm/setup.sh)"
    if vng_binary() is None:
        return "virtme-ng (vng) is not installed (pip install -e '.[test]')"
    if shutil.which("busybox") is None:
        return "busybox is not installed (run tests/vm/setup.sh): vng needs it for the guest's initramfs"
    images = kernel_images()
    missing = [k for k in selected_kernels() if k not in images or not images[k].is_file()]
    if missing:
        return f"kernel {', '.join(missing)} not fetched (run tests/vm/setup.sh)"
    if not Path(GUEST_OUT).is_dir():
        return f"{GUEST_OUT} does not exist on the host (vng needs it to share results)"
    return ""


def qemu_devices(disk: Path) -> str:
    """The guest's devices; `disk` backs the nvme (a fresh, empty, sparse file per boot, so
    guests booted at once never share an image or its lock)."""
    return " ".join(
        [
            "-device intel-iommu,intremap=on",
            "-netdev user,id=n0 -device e1000e,netdev=n0",
            f"-drive file={disk},if=none,id=nvm,format=raw",
            "-device nvme,serial=msixd0,drive=nvm,msix_qsize=2048",
            "-netdev user,id=n1 -device virtio-net-pci,netdev=n1,vectors=6",
        ]
    )


# e1000e's options are per board, and every probe counts as a new board (its
# bd_number, drivers/net/ethernet/intel/e1000e/param.c, up to E1000_MAX_NIC =
# 32): a value for each, so that a device bound back after a test stays unthrottled.
E1000E_OPTIONS = "InterruptThrottleRate=" + ",".join(["0"] * 32)

GUEST_SCRIPT = """\
set -u
out={out}
uname -r > $out/release
# QEMU 7.2's e1000e aborts when an interrupt-throttling timer fires after
# MSI-X was disabled (fixed upstream in QEMU 8.0, "e1000e: Do not assert when
# MSI-X is disabled later"): the driver runs unthrottled, so it arms none.
# udev may have loaded it already, without the option: load it again.
modprobe -r e1000e 2>/dev/null
modprobe e1000e {e1000e_options} 2>$out/modprobe.err
modprobe -a vfio-pci nvme virtio_net 2>>$out/modprobe.err
udevadm settle 2>/dev/null || sleep 1
cut -d' ' -f1 /proc/uptime > $out/uptime_at_start
cd {repo}
export PYTHONDONTWRITEBYTECODE=1 MSIXD_IN_GUEST={kernel} MSIXD_GUEST_REPORT=$out/report.jsonl
{python} -m pytest -p no:cacheprovider -q -rN --no-header {nodeids} > $out/pytest.log 2>&1
echo $? > $out/rc
"""


@dataclass
class GuestRun:
    kernel: str
    kind: str = "host-root"  # or "systemd": tests/vm/systemd_guest.py
    release: str = ""
    rc: int | None = None
    wall_seconds: float = 0.0
    uptime_at_start: float | None = None
    results: dict[str, dict] = field(default_factory=dict)
    console: str = ""
    pytest_log: str = ""
    uptime_at_end: float | None = None
    journal: str = ""
    notes: list[str] = field(default_factory=list)

    def read_results(self, outdir: Path) -> None:
        """What the guest wrote: release, pytest's exit status and log, one JSON line per test report."""
        self.release = _read(outdir / "release")
        rc = _read(outdir / "rc")
        self.rc = int(rc) if rc.isdigit() else None
        uptime = _read(outdir / "uptime_at_start")
        self.uptime_at_start = float(uptime) if uptime else None
        uptime = _read(outdir / "uptime_at_end")
        self.uptime_at_end = float(uptime) if uptime else None
        self.pytest_log = _read(outdir / "pytest.log")
        self.journal = _read(outdir / "journal.txt")
        report = outdir / "report.jsonl"
        if report.is_file():
            for text in report.read_text().splitlines():
                _merge(self.results, json.loads(text))

    def summary(self) -> str:
        boot = f"guest up to tests in {self.uptime_at_start:.1f} s of guest time" if self.uptime_at_start else "no boot"
        if self.uptime_at_start and self.uptime_at_end:
            boot += f", tests {self.uptime_at_end - self.uptime_at_start:.1f} s"
        counts: dict[str, int] = {}
        for result in self.results.values():
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no test results"
        notes = "".join(f"; {note}" for note in self.notes)
        return (f"Linux {self.release or '?'}: {boot}; {tally}; guest pytest exit {self.rc}; "
                f"{self.wall_seconds:.1f} s wall{notes}")

    def console_tail(self, lines: int = 40) -> str:
        """The guest's pytest output; when pytest did not finish, the kernel console's end too
        (a panic, an oops or a hung task is only there)."""
        text = self.pytest_log or "\n".join(l for l in self.console.splitlines() if not l.startswith("["))
        tail = "\n".join(text.splitlines()[-lines:])
        if self.rc is None:
            tail += "\n--- end of the kernel console ---\n" + "\n".join(self.console.splitlines()[-lines:])
        return tail or self.console[-4000:]


def _merge(results: dict[str, dict], line: dict) -> None:
    """Setup, call and teardown reports of one test fold into one outcome (the worst)."""
    known = results.get(line["nodeid"])
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    if known is None or rank[line["outcome"]] > rank[known["outcome"]]:
        results[line["nodeid"]] = line


def boot(kernel: str, guest_script: str, out: Path) -> tuple[str, float]:
    """Boot `kernel`, run guest_script (sh) in it with `out` at /mnt; return console and wall time."""
    (out / "run.sh").write_text(guest_script)
    disk = out / "nvme.img"
    with disk.open("wb") as image:
        image.truncate(64 << 20)
    command = [
        vng_binary() or "vng",
        "--run", str(kernel_images()[kernel]),
        "--force-9p", "--disable-microvm", "--disable-kvm",
        "-m", "2G", "-p", "2", "-v",
        # no_timer_check: on a loaded host the emulated guest can miss the early IO-APIC timer
        # check and panic ("timer doesn't work through Interrupt-remapped IO-APIC"); seen here
        # with four guests on two cores.
        "--append=intel_iommu=on msixd_bench=1 no_timer_check",
        f"--rwdir={GUEST_OUT}={out}",
        f"--qemu-opts={qemu_devices(disk)}",  # "=": the value starts with "-"
        f"--exec=sh {GUEST_OUT}/run.sh",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, start_new_session=True) as vng:
        try:
            console, _ = vng.communicate(timeout=GUEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_guest(vng)
            console = f"guest killed after {GUEST_TIMEOUT:.0f} s\n{vng.communicate()[0]}"
    return console, time.monotonic() - started


def kill_guest(vng: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """End vng and everything it started: QEMU runs as its grandchild and outlives a kill of vng alone."""
    try:
        os.killpg(vng.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    vng.wait()


def run_guest(kernel: str, nodeids: list[str]) -> GuestRun:
    """Boot one guest on `kernel` and run the given vm tests in it."""
    run = GuestRun(kernel)
    with tempfile.TemporaryDirectory(prefix=f"msixd-bench-{kernel}-") as out:
        script = GUEST_SCRIPT.format(
            out=GUEST_OUT, repo=REPO, kernel=kernel, python=sys.executable, nodeids=" ".join(f"'{n}'" for n in nodeids),
            e1000e_options=E1000E_OPTIONS,
        )
        run.console, run.wall_seconds = boot(kernel, script, Path(out))
        run.read_results(Path(out))
    return run


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


EXEC_SCRIPT = """\
set -u
cd {repo}
export PYTHONDONTWRITEBYTECODE=1 MSIXD_IN_GUEST={kernel} PATH={bindir}:$PATH
modprobe -r e1000e 2>/dev/null
modprobe e1000e {e1000e_options}
modprobe -a vfio-pci nvme virtio_net
{command} > {out}/output 2>&1
echo $? > {out}/rc
"""


def main(argv: list[str] | None = None) -> int:
    """python -m tests.vm.bench --kernel 6.12 --out DIR -- COMMAND...: run COMMAND in a guest.

    DIR is /mnt in the guest; COMMAND's output is printed, and its exit status returned.
    """
    import argparse
    import shlex

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--kernel", required=True, choices=KERNELS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    problem = why_not_runnable()
    if problem:
        print(f"bench: cannot run: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    script = EXEC_SCRIPT.format(
        repo=REPO, kernel=args.kernel, bindir=Path(sys.executable).parent, out=GUEST_OUT,
        command=shlex.join(args.command), e1000e_options=E1000E_OPTIONS,
    )
    console, wall = boot(args.kernel, script, args.out)
    print(_read(args.out / "output"))
    rc = _read(args.out / "rc")
    if not rc.isdigit():
        print("\n".join(console.splitlines()[-30:]), file=sys.stderr)
        return 1
    print(f"bench: {args.kernel} guest, {wall:.1f} s wall, exit {rc}", file=sys.stderr)
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
