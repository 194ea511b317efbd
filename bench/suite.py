"""Every benchmark in one run: JSON and PNG under bench/results/, a summary in README.md.

    sudo bench/run                 # installs what it needs, then runs this
    python -m bench.suite --quick  # smaller grid and fewer calls, to try it out

Each figure is taken against a floor measured in the same run, on the same
machine: the ratio is what carries across machines, the absolute numbers are
this machine's only. The parts:

- inventory: synthetic trees (bench/synth.py) of 64/256/1024 CPUs and
  512/4096/16384 IRQs; msixd's in-process inventory and GetDevice (every
  device), and ListDevices and GetDevice over the socket, against the floor:
  the fewest reads the kernel requires for the same answers, with bare os
  calls (bench/floor.py, bench/inventory.py);
- sysfs: the same in process, on a real kernel's sysfs in a 6.1 and a 6.12
  guest, where config-space reads are device accesses (bench/sysfs.py);
- rpc: p50/p99 and throughput of GetDevice and ListDevices with 1, 8 and 32
  client processes, against msixd's own Echo and a bare grpcio Echo server in
  its own process (bench/rpc.py); footprint: RSS idle and after a 16384-IRQ
  inventory, time from start to ready;
- vfio and watch, in a 6.1 and a 6.12 guest of the real-kernel bench
  (bench/vfio.py): enable and resize, and the CPU cost of counting loopback
  interrupts, against direct ioctls and a bare epoll loop;
- lease, in the same guests (bench/lease.py): the latency from a loopback
  trigger to the wake-up of a consumer holding a leased eventfd, against the
  same with the eventfd of the process that called SET_IRQS;
- cli: every msixctl command, start to exit, against a bare grpcio client
  making the same RPC, and its --help against a bare typer app's (bench/cli.py).
- policy: the placement reconciler on the same synthetic trees: CPU per full
  and drift pass, the share of one CPU at the default interval (goal: under 1%
  at 16384 IRQs), and the time from a vector moved by hand to its correction
  (bench/policy.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def save(name: str, data: object, out: Path) -> None:
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): 1 is linear, above 1 super-linear."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def scaling(rows: list[dict]) -> dict[str, dict[str, float]]:
    """The exponent of each measured cost against IRQs (per CPU count) and CPUs (per IRQ count)."""
    found: dict[str, dict[str, float]] = {}
    for key in ("inventory", "floor_inventory", "list_devices_rpc"):
        by_irqs = {}
        for cpus in sorted({r["cpus"] for r in rows}):
            line = sorted((r["irqs"], r["seconds"][key]["median"]) for r in rows if r["cpus"] == cpus)
            if len(line) > 1:
                by_irqs[f"{cpus}_cpus"] = round(slope([x for x, _ in line], [y for _, y in line]), 2)
        by_cpus = {}
        for irqs in sorted({r["irqs"] for r in rows}):
            line = sorted((r["cpus"], r["seconds"][key]["median"]) for r in rows if r["irqs"] == irqs)
            if len(line) > 1:
                by_cpus[f"{irqs}_irqs"] = round(slope([x for x, _ in line], [y for _, y in line]), 2)
        found[key] = {"vs_irqs": by_irqs, "vs_cpus": by_cpus}  # type: ignore[dict-item]
    return found


def run_in_guest(part: str, kernel: str, out: Path) -> dict | None:
    """python -m bench.<part> in a guest of the real-kernel bench; its JSON saved as <part>-<kernel>.json,
    and the profiles it names, if any, as profile-<part>-<kernel>.txt."""
    from tests.vm import bench

    problem = bench.why_not_runnable()
    if problem:
        print(f"bench: {part} on {kernel} skipped: {problem}", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory(prefix=f"msixd-bench-{part}-{kernel}-") as shared:
        rc = bench.main(["--kernel", kernel, "--out", shared, "--",
                         "python", "-m", f"bench.{part}", "--out", f"{bench.GUEST_OUT}/{part}.json"])
        result = Path(shared) / f"{part}.json"
        if rc != 0 or not result.is_file():
            print(f"bench: {part} on {kernel} failed (exit {rc})", file=sys.stderr)
            return None
        data = json.loads(result.read_text())
    profiles = data.pop("profiles", None)
    if profiles:  # where the time goes, as text beside the figures
        (out / f"profile-{part}-{kernel}.txt").write_text(
            "".join(f"== {what} ==\n{text}\n" for what, text in profiles.items()))
    save(f"{part}-{kernel}", data, out)
    return data


def run_vfio(kernel: str, out: Path) -> dict | None:
    return run_in_guest("vfio", kernel, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a small grid and fewer calls: try the suite out")
    parser.add_argument("--only", choices=["inventory", "rpc", "vfio", "sysfs", "lease", "cli", "policy", "report"],
                        action="append",
                        help="run these parts only (repeatable); 'report' redraws from saved JSON")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md's performance section")
    args = parser.parse_args(argv)
    parts = set(args.only or ["inventory", "rpc", "vfio", "sysfs", "lease", "cli", "policy", "report"])
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.monotonic()

    if "inventory" in parts:
        from bench import inventory

        cpus, irqs = ([64, 256], [512, 4096]) if args.quick else ([64, 256, 1024], [512, 4096, 16384])
        rows = inventory.run(cpus, irqs)
        save("inventory", {"grid": rows, "scaling": scaling(rows), "machine": machine()}, args.out)
        largest = (cpus[-1], irqs[0])  # the most CPUs: the longest count lines per IRQ
        (args.out / f"profile-list_devices-{largest[0]}cpus.txt").write_text(inventory.breakdown(*largest))
    if "rpc" in parts:
        from bench import rpc

        if args.quick:
            rpc.SAMPLES = 800
        rows = rpc.run([1, 8] if args.quick else [1, 8, 32])
        save("rpc", {"samples_per_method": rpc.SAMPLES, "rows": rows, "footprint": rpc.footprint(),
                     "machine": machine()}, args.out)
        rpc.profile_get_device(args.out)
        for method in ("Echo", "GetDevice"):  # msixd's process under each: what the work adds
            rpc.profile_server(args.out, method)
    if "vfio" in parts:
        for kernel in ("6.1", "6.12"):
            run_vfio(kernel, args.out)
    if "sysfs" in parts:
        for kernel in ("6.1", "6.12"):
            run_in_guest("sysfs", kernel, args.out)
    if "policy" in parts:
        from bench import policy

        cpus, irqs = ([64, 256], [512, 4096]) if args.quick else ([64, 256, 1024], [512, 4096, 16384])
        results = policy.run(cpus, irqs, trials=3 if args.quick else 10, intervals=2 if args.quick else 6)
        save("policy", {**results, "default_interval_s": policy.DEFAULT_INTERVAL, "machine": machine()}, args.out)
    if "lease" in parts:
        for kernel in ("6.1", "6.12"):
            run_in_guest("lease", kernel, args.out)
    if "cli" in parts:
        from bench import cli

        result = cli.run(runs=7 if args.quick else cli.RUNS, out=args.out)
        save("cli", {**result, "machine": machine()}, args.out)
    if "report" in parts:
        from bench import report

        summary = report.write(args.out)
        if not args.no_readme:
            update_readme(summary)
        print(summary)
    print(f"bench: done in {time.monotonic() - started:.0f} s; results in {args.out}", file=sys.stderr)
    return 0


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "kernel": os.uname().release, "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d")}


def update_readme(summary: str) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"bench: README.md has no {BEGIN} ... {END} section; summary not written", file=sys.stderr)
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{summary.strip()}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())

