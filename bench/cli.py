"""msixctl against its floors: a bare grpcio client making the same RPC, and a bare typer app's help.

msixd serves a captured 6.12 guest tree in this process, through the same gateway
and access check as the daemon, with the tests' fake VFIO standing in for the
kernel's so that Enable, Trigger, Disable and Release answer. For every msixctl
command, RUNS runs of `msixctl ...` as a user starts it (the installed console
script, its output piped) alternate with RUNS runs of the floor: a Python script
that imports grpc and the generated API and makes the same call, nothing else.
The ratio of the median wall times is the figure (CPU time of the child is kept
too: on a loaded machine it moves less). --help is measured against a typer app
of msixctl's shape (global options, a command with an argument and options) and
nothing else. A command over its goal is profiled (pyinstrument).
"""

from __future__ import annotations

import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from msixd import logs
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import materialise
from tests.serving import serve

REPO = Path(__file__).resolve().parents[1]
RUNS = 21
GOAL = 1.3
E1000E, NVME = "0000:00:0a.0", "0000:00:0b.0"  # both on vfio-pci in the captured guest


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # msixctl's arguments after --socket
    floor: str  # the floor's call, as Python: `stub` and `pb` are there
    before: Callable[[msix_pb2_grpc.MsixServiceStub], object] | None = None  # untimed, before each run


def _enable(stub: msix_pb2_grpc.MsixServiceStub) -> object:
    return stub.Enable(pb.EnableRequest(bdf=NVME, vectors=4))


CASES = [
    Case("list", ("list",), "stub.ListDevices(pb.ListDevicesRequest(), timeout=10)"),
    Case("list -o json", ("list", "-o", "json"), "stub.ListDevices(pb.ListDevicesRequest(), timeout=10)"),
    Case("show", ("show", NVME), f"stub.GetDevice(pb.GetDeviceRequest(bdf={NVME!r}), timeout=10)"),
    Case("show -o json", ("show", NVME, "-o", "json"),
         f"stub.GetDevice(pb.GetDeviceRequest(bdf={NVME!r}), timeout=10)"),
    Case("domains", ("domains",), "stub.ListDomains(pb.ListDomainsRequest(), timeout=10)"),
    Case("status", ("status",), "stub.GetStatus(pb.GetStatusRequest(), timeout=10)"),
    Case("bind", ("bind", E1000E), f"stub.Bind(pb.BindRequest(bdf={E1000E!r}), timeout=10)"),
    Case("enable", ("enable", NVME, "--vectors", "4"),
         f"stub.Enable(pb.EnableRequest(bdf={NVME!r}, vectors=4), timeout=10)", _enable),
    Case("trigger", ("trigger", NVME, "1"), f"stub.Trigger(pb.TriggerRequest(bdf={NVME!r}, vector=1), timeout=10)",
         _enable),
    Case("affinity", ("affinity", NVME, "1", "1"),
         f"stub.SetAffinity(pb.SetAffinityRequest(bdf={NVME!r}, vector=1, cpus='1'), timeout=10)", _enable),
    Case("affinity --spread", ("affinity", NVME, "--spread", "--dry-run"),
         f"stub.Spread(pb.SpreadRequest(bdf={NVME!r}, dry_run=True), timeout=10)"),
    Case("disable", ("disable", NVME, "--vector", "3"),
         f"stub.Disable(pb.DisableRequest(bdf={NVME!r}, vector=3), timeout=10)", _enable),
    Case("release", ("release", E1000E), f"stub.Release(pb.ReleaseRequest(bdf={E1000E!r}), timeout=10)"),
    Case("watch -o json", ("watch", NVME, "--count", "1", "-o", "json"),
         f"list(stub.Watch(pb.WatchRequest(bdf={NVME!r}, interval_ms=1000, count=1), timeout=10))"),
]

FLOOR_CLIENT = """import grpc
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc

with grpc.insecure_channel({address!r}) as channel:
    stub = msix_pb2_grpc.MsixServiceStub(channel)
    {call}
"""

FLOOR_TYPER = '''import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


@app.callback()
def options(
    socket: str = typer.Option("/run/x.sock", envvar="X_SOCKET", help="a socket"),
    target: str = typer.Option("", envvar="X_TARGET", help="a target"),
    ca: str = typer.Option("", envvar="X_CA", help="a file"),
    cert: str = typer.Option("", envvar="X_CERT", help="a file"),
    key: str = typer.Option("", envvar="X_KEY", help="a file"),
    timeout: float = typer.Option(10.0, min=0.1, help="seconds"),
) -> None:
    """A bare typer app of msixctl's shape."""


@app.command()
def show(name: str = typer.Argument(..., help="a name"), output: str = typer.Option("table", "--output", "-o")) -> None:
    """Show one thing.

    \\b
    Example: floor show x
    """


@app.command()
def other(count: int = typer.Option(1, min=0)) -> None:
    """Another command."""


app()
'''


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the child, exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")
    return wall, cpu, done.returncode


def compare(
    name: str, ours: list[str], floor: list[str], env: dict[str, str], runs: int,
    before: Callable[[], object] | None = None, warm_up: int = 2,
) -> dict[str, object]:
    """Alternate runs of ours and the floor (after warm-up runs of each); medians and their ratio."""
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "floor": []}
    for run in range(runs + warm_up):
        pair = [("ours", ours), ("floor", floor)]
        for side, command in pair if run % 2 else reversed(pair):
            if before is not None:
                before()
            wall, cpu, _ = timed(command, env)
            if run >= warm_up:
                samples[side].append((wall, cpu))
    ours_wall = statistics.median(w for w, _ in samples["ours"])
    floor_wall = statistics.median(w for w, _ in samples["floor"])
    ours_cpu = statistics.median(c for _, c in samples["ours"])
    floor_cpu = statistics.median(c for _, c in samples["floor"])
    row: dict[str, object] = {
        "command": name,
        "msixctl_ms": round(ours_wall * 1e3, 1),
        "floor_ms": round(floor_wall * 1e3, 1),
        "ratio": round(ours_wall / floor_wall, 2),
        "msixctl_cpu_ms": round(ours_cpu * 1e3, 1),
        "floor_cpu_ms": round(floor_cpu * 1e3, 1),
        "cpu_ratio": round(ours_cpu / floor_cpu, 2) if floor_cpu else None,
    }
    print(row, flush=True)
    return row


def prepare_tree(scratch: Path) -> Path:
    """The captured guest, with the sysfs files Release writes (the capture has no drivers/ directory)."""
    root = materialise("guest-6.12", scratch)
    drivers = root / "sys/bus/pci/drivers/vfio-pci"
    drivers.mkdir(parents=True, exist_ok=True)
    (drivers / "unbind").touch()
    (root / "sys/bus/pci/drivers_probe").touch()
    return root


def profile(argv: list[str], env: dict[str, str], out: Path, name: str) -> None:
    """Where one run of msixctl spends its time, for a command over its goal."""
    text = subprocess.run(
        [sys.executable, "-m", "pyinstrument", "-i", "0.0005", "--show-all", "-m", "msixctl.main", *argv],
        env=env, capture_output=True, text=True, check=False, cwd=REPO,
    ).stderr
    (out / f"profile-cli-{name.replace(' ', '_').replace('-', '')}.txt").write_text(text)


def run(runs: int = RUNS, out: Path | None = None, warm_up: int = 2) -> dict[str, object]:
    logs.configure("json", "error")  # the server in this process: its request lines would drown the figures
    scratch = Path(tempfile.mkdtemp(prefix="msixd-bench-cli-"))
    # As installed packages are: compiled once, not at every start.
    compileall.compile_dir(str(REPO / "msixctl"), quiet=1)
    compileall.compile_dir(str(REPO / "msixd"), quiet=1)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "MSIXD_SOCKET", "MSIXD_TARGET", "COLUMNS"):
        env.pop(variable, None)
    msixctl = str(Path(sys.executable).parent / "msixctl")
    try:
        root = prepare_tree(scratch)
        fake = FakeVfio({bdf: FakeDevice(table_size=64 if bdf == NVME else 5, dynamic=True) for bdf in (E1000E, NVME)})
        services = Services.build(KernelRoots.under(root), scratch / "state" / "state.json", vfio_api=fake)  # type: ignore[arg-type]
        socket = scratch / "msixd.sock"
        server = serve(services, socket)
        rows = []
        try:
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                stub = msix_pb2_grpc.MsixServiceStub(channel)
                for case in CASES:
                    floor = scratch / f"floor-{len(rows)}.py"
                    floor.write_text(FLOOR_CLIENT.format(address=f"unix:{socket}", call=case.floor))
                    setup = case.before
                    rows.append(compare(
                        case.name, [msixctl, "--socket", str(socket), *case.argv], [sys.executable, str(floor)], env,
                        runs, (lambda setup=setup: setup(stub)) if setup else None, warm_up,
                    ))
                    if out is not None and float(str(rows[-1]["ratio"])) > GOAL:
                        profile(["--socket", str(socket), *case.argv], env, out, case.name)
        finally:
            server.stop(None)
        typer_app = scratch / "floor_typer.py"
        typer_app.write_text(FLOOR_TYPER)
        helps = [
            compare("--help", [msixctl, "--help"], [sys.executable, str(typer_app), "--help"], env, runs,
                    warm_up=warm_up),
            compare("show --help", [msixctl, "show", "--help"], [sys.executable, str(typer_app), "show", "--help"],
                    env, runs, warm_up=warm_up),
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"runs": runs, "goal": GOAL, "commands": rows, "help": helps}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    run()
