"""The bench's second kind of guest: Debian with systemd as PID 1 and msixd installed as a user would.

Once per test session, the cached root file system (tests/vm/setup.sh) is
copied and this checkout is installed into the copy with its own
deploy/install.sh, run in a chroot exactly as the README tells a user (with a
per-user interpreter first on root's PATH, as on a machine with pyenv, to keep
the installer honest about which Python it uses). Then, for each kernel, the
copy becomes a fresh ext4 disk image (mke2fs -d: nothing is mounted on the
host) and boots with systemd as PID 1. msixd.service starts as enabled; after
multi-user.target a oneshot unit runs the selected tests with pytest inside the
guest, writes its results under /srv/msixd-bench/out and powers the guest off.
The host reads them back from the image with debugfs.

Why a disk image and not the directory itself over 9p (vng --root): the guest
reads its root through the page cache of a block device instead of one 9p
round trip per file operation, uncached. Measured on this bench (6.12, software
emulation): msixd's start to READY 27 s over 9p, 12 s from the disk; one
msixctl call 20-24 s over 9p, 4-5 s from the disk; the same boot with a
dozen calls 180 s against 66 s.

The guest's kernel modules are not in the image: vng exports the kernel's own
module directory, read-only, at /lib/modules/<release>.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vm import bench

ROOTFS = bench.CACHE / "rootfs-bookworm"
IMAGE_SIZE = 3 << 30  # sparse: what the guest writes (journal, pyc files, state) fits with room
BENCH_DIR = "/srv/msixd-bench"  # in the guest: the runner, its inputs and `out/`
CHECKOUT = "/root/msixd"  # in the guest: the clone the user installs from
USER_PYTHON = "/root/.local/bin/python3"  # a per-user interpreter, first on root's PATH
# The host settings pip needs to reach its index from inside the chroot (when this host has them).
PIP_FILES = ("/etc/pip.conf", "/etc/xdg/pip", "/etc/ssl/certs/ca-certificates.crt", "/etc/resolv.conf")

RUNNER_UNIT = f"""\
[Unit]
Description=msixd bench: run the systemd guest's tests, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh {BENCH_DIR}/run.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

RUNNER_SCRIPT = f"""\
set -u
out={BENCH_DIR}/out
mkdir -p $out
uname -r > $out/release
cut -d' ' -f1 /proc/uptime > $out/uptime_at_start
systemd-analyze > $out/systemd-analyze 2>&1
cd {CHECKOUT}
export MSIXD_IN_GUEST=$(cat {BENCH_DIR}/kernel) MSIXD_GUEST_KIND=systemd MSIXD_GUEST_REPORT=$out/report.jsonl
set -- $(cat {BENCH_DIR}/nodeids)
python3 -m pytest -p no:cacheprovider -q -rN --no-header "$@" > $out/pytest.log 2>&1
echo $? > $out/rc
cut -d' ' -f1 /proc/uptime > $out/uptime_at_end
systemd-analyze security --no-pager msixd.service 2>&1 | tail -n 1 > $out/exposure
journalctl -b --no-pager -o short-monotonic > $out/journal.txt 2>&1
"""


def why_not_runnable() -> str:
    problem = bench.why_not_runnable()
    if problem:
        return problem
    for tool in ("mke2fs", "debugfs", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run tests/vm/setup.sh)"
    if not (ROOTFS / "usr/bin/systemctl").exists():
        return f"no root file system at {ROOTFS} (run tests/vm/setup.sh)"
    return ""


@dataclass
class Staged:
    """The installed root file system of this session, shared by every kernel's boot."""

    root: Path
    install_log: str
    install_rc: int
    seconds: float


def copy_checkout(dest: Path) -> None:
    """This checkout as a clone has it: tracked and untracked files, nothing ignored (.venv, caches)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=bench.REPO, capture_output=True, check=True,
    ).stdout
    dest.mkdir(parents=True)
    packed = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=bench.REPO, input=files,
                            capture_output=True, check=True).stdout
    subprocess.run(["tar", "-xf", "-", "-C", str(dest)], input=packed, check=True)


def processes_rooted_in(root: Path) -> dict[int, str]:
    """PID -> command line of every host process whose root directory is inside `root`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/root").startswith(str(root)):
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone, or a kernel thread
            continue
    return found


def stop_processes(pids: list[int]) -> None:
    """End the processes our own install run left behind, by their PIDs (SIGTERM, then SIGKILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.1)


def stage(workdir: Path) -> Staged:
    """Copy the cached root file system and install this checkout into it, in a chroot, as a user would."""
    started = time.monotonic()
    root = workdir / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(ROOTFS), str(root)], check=True)
    copy_checkout(root / CHECKOUT.lstrip("/"))
    for name in PIP_FILES:
        if os.path.exists(name):
            target = root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.isdir(name):
                shutil.copytree(name, target, dirs_exist_ok=True)
            else:
                target.unlink(missing_ok=True)  # bookworm's /etc/resolv.conf may be a link
                shutil.copy(name, target)
    user_python = root / USER_PYTHON.lstrip("/")
    user_python.parent.mkdir(parents=True, exist_ok=True)
    user_python.symlink_to("/usr/bin/python3")

    bench_dir = root / BENCH_DIR.lstrip("/")
    bench_dir.mkdir(parents=True)
    # A private mount namespace: the chroot's /dev and /proc vanish with it, whatever happens.
    path = f"{Path(USER_PYTHON).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
    # pip's own settings that make sense in the chroot (its cert bundle is copied there); not host paths.
    env.update({k: v for k, v in os.environ.items() if k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL")})
    script = (
        f"mount --bind /dev {shlex.quote(str(root))}/dev && mount -t proc proc {shlex.quote(str(root))}/proc && "
        f"exec chroot {shlex.quote(str(root))} {CHECKOUT}/deploy/install.sh"
    )
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=env, capture_output=True, text=True, timeout=900)
    left = processes_rooted_in(root)
    stop_processes(list(left))
    enabled_by = "installer"
    if subprocess.run(["chroot", str(root), "systemctl", "--quiet", "is-enabled", "msixd.service"]).returncode != 0:
        enabled_by = "bench"  # so the guest's tests still run; a test reports the installer's miss
        subprocess.run(["chroot", str(root), "systemctl", "--quiet", "enable", "msixd.service"], check=True)
    log = done.stdout + done.stderr
    (bench_dir / "install.json").write_text(json.dumps({
        "rc": done.returncode, "log": log, "left_running": left, "enabled_by": enabled_by, "user_python": USER_PYTHON,
    }, indent=1))
    for name in PIP_FILES[-1:]:  # the guest has no network: no resolver
        (root / name.lstrip("/")).unlink(missing_ok=True)

    (bench_dir / "run.sh").write_text(RUNNER_SCRIPT)
    (root / "etc/systemd/system/msixd-bench-tests.service").write_text(RUNNER_UNIT)
    subprocess.run(["chroot", str(root), "systemctl", "--quiet", "enable", "msixd-bench-tests.service"], check=True)
    return Staged(root, log, done.returncode, time.monotonic() - started)


def nvme_disk(directory: Path) -> Path:
    """A fresh, sparse disk for this boot's nvme (QEMU locks drive files; guests may run side by side)."""
    disk = directory / "nvme.img"
    with disk.open("wb") as stream:
        stream.truncate(64 << 20)
    return disk


def boot(kernel: str, image: Path, console_log: Path) -> float:
    command = [
        bench.vng_binary() or "vng",
        "--run", str(bench.kernel_images()[kernel]),
        "--root-disk", str(image), "--root-fstype", "ext4", "--rw", "--systemd", "--force-9p",
        "--disable-microvm", "--disable-kvm", "-m", "2G", "-p", "2", "-v",
        "--append=intel_iommu=on msixd_bench=1",
        f"--qemu-opts={bench.qemu_devices(nvme_disk(image.parent))}",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    with console_log.open("w") as console, subprocess.Popen(
        command, cwd=bench.REPO, env=env, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    ) as vng:
        try:
            vng.wait(timeout=bench.GUEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            bench.kill_guest(vng)
            console.write(f"\nguest killed after {bench.GUEST_TIMEOUT:.0f} s\n")
    return time.monotonic() - started


def run_guest(kernel: str, nodeids: list[str], staged: Staged) -> bench.GuestRun:
    """Boot the staged root file system on `kernel` and run the given tests in it."""
    run = bench.GuestRun(kernel, kind="systemd")
    with tempfile.TemporaryDirectory(prefix=f"msixd-systemd-{kernel}-") as tmp:
        workdir = Path(tmp)
        bench_dir = staged.root / BENCH_DIR.lstrip("/")
        (bench_dir / "kernel").write_text(kernel)
        (bench_dir / "nodeids").write_text("\n".join(nodeids) + "\n")
        image = workdir / "root.img"
        started = time.monotonic()
        with image.open("wb") as stream:
            stream.truncate(IMAGE_SIZE)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "msixd-guest", "-d", str(staged.root), str(image)],
                       check=True)
        run.wall_seconds = time.monotonic() - started
        run.wall_seconds += boot(kernel, image, workdir / "console.log")
        run.console = (workdir / "console.log").read_text(errors="replace")
        # rdump copies the guest's out/ to workdir/out; nothing there when the runner never started.
        subprocess.run(["debugfs", "-R", f"rdump {BENCH_DIR}/out {workdir}", str(image)], capture_output=True)
        run.read_results(workdir / "out")
        exposure = re.search(r"exposure level for msixd.service: ([\d.]+)", bench._read(workdir / "out/exposure"))
        if exposure:
            run.notes.append(f"systemd-analyze security msixd: {exposure.group(1)}")
    starts = start_times(run.journal)
    if starts:
        run.notes.append("msixd start to READY " + ", ".join(f"{t:.1f}" for t in starts) + " s (first at boot)")
    return run


START_LINE = re.compile(r"^\[\s*([\d.]+)\] \S+ systemd\[1\]: (Starting|Started) msixd\.service")


def start_times(journal: str) -> list[float]:
    """Seconds from each "Starting msixd.service" to its "Started" (READY=1), from journalctl -o short-monotonic."""
    times, starting = [], None
    for line in journal.splitlines():
        match = START_LINE.match(line)
        if match and match.group(2) == "Starting":
            starting = float(match.group(1))
        elif match and starting is not None:
            times.append(float(match.group(1)) - starting)
            starting = None
    return times
