"""The placement reconciler's cost at host scale, and how fast it puts a moved vector back.

For each synthetic tree (bench/synth.py: 64/256/1024 CPUs x 512/4096/16384
IRQs) one rule pins every vector of every device to one CPU. Measured, as CPU
time of the thread doing it (median of REPEAT):

- a full pass that places every vector (the first apply), and one that finds
  everything in place (start, reload, a uevent on every device at once);
- a drift pass that finds nothing moved: what msixd spends every
  policy_interval seconds, against its floor, the same file operations (one
  msi_irqs/ listing per device, one smp_affinity_list read per vector) with
  bare os calls; and the share of one CPU that costs at the default interval,
  with uevents and without them (then a drift pass also lists every other
  function's IRQs and driver);
- a drift pass that finds 1% of the vectors moved and puts them back.

On the trees of the most IRQs, the reconciler also runs on its own thread, as
in msixd, for STEADY_INTERVALS intervals at the default interval with nothing
moved: the CPU time of the whole process over that wall time is its share of
one CPU, measured rather than derived from one pass.

Then, on the largest tree, the reconciler runs on its own thread at the
default interval and at 1 s, and vectors are moved by hand at random moments:
the time until each is back is what an operator waits at most for a
correction (the interval, plus the pass).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.synth import generate
from msixd.config import Config
from msixd.kernel.roots import KernelRoots
from msixd.kernel.uevent import Lost, Uevent
from msixd.service.services import Services

REPEAT = 5
STEADY_INTERVALS = 6
DEFAULT_INTERVAL = Config().policy_interval
POLICY = '[[rule]]\nname = "all"\nplace = "pin"\ncpus = "0"\n'


class NoUevents:
    """A uevent source that never has one: the reconciler on a host whose devices do not change."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def receive(self, timeout: float | None) -> Uevent | Lost | None:
        self._closed.wait(timeout)
        return None

    def close(self) -> None:
        self._closed.set()


def cpu_seconds(work: Callable[[], object], repeat: int = REPEAT) -> float:
    samples = []
    for _ in range(repeat):
        started = time.thread_time()
        work()
        samples.append(time.thread_time() - started)
    return statistics.median(samples)


def floor(tree: Path, bdfs: list[str], irqs: list[int]) -> None:
    """The drift pass's file operations with bare os calls, nothing else."""
    for bdf in bdfs:
        os.listdir(tree / f"sys/bus/pci/devices/{bdf}/msi_irqs")
    for irq in irqs:
        fd = os.open(f"{tree}/proc/irq/{irq}/smp_affinity_list", os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)


def build(tree: Path, scratch: Path, interval: float = DEFAULT_INTERVAL, uevents: bool = True) -> Services:
    policy_dir = tree / "etc/msixd/policy.d"
    policy_dir.mkdir(parents=True, exist_ok=True)
    (policy_dir / "10-all.toml").write_text(POLICY)
    return Services.build(KernelRoots.under(tree), scratch / "state.json", policy_dir=policy_dir,
                          interval=interval, irqbalance=False, uevents=NoUevents() if uevents else None)


def move(tree: Path, irqs: list[int]) -> None:
    for irq in irqs:
        (tree / f"proc/irq/{irq}/smp_affinity_list").write_text("1\n")


def measure(ncpus: int, nirqs: int, scratch: Path) -> dict[str, float | int]:
    tree = scratch / f"tree-{ncpus}-{nirqs}"
    bdfs = generate(tree, ncpus, nirqs)
    irqs = sorted(int(name) for name in os.listdir(tree / "proc/irq"))
    services = build(tree, scratch)
    reconciler = services.reconciler
    reconciler.load_policy()
    started = time.thread_time()
    reconciler.apply()
    place_all_s = time.thread_time() - started
    assert reconciler.diff() == (), "every vector in place"
    full_s = cpu_seconds(reconciler.apply)

    def drift() -> None:
        with reconciler._pass_lock:
            reconciler._drift_pass()

    floor(tree, bdfs, irqs)  # warm the caches for both
    drift()
    floor_s = cpu_seconds(lambda: floor(tree, bdfs, irqs))
    drift_s = cpu_seconds(drift)
    moved = random.Random(nirqs).sample(irqs, max(1, nirqs // 100))

    def drift_with_moves() -> None:
        move(tree, moved)
        corrected = reconciler.stats.corrections["drift"]
        started = time.thread_time()
        drift()
        samples.append(time.thread_time() - started)
        assert reconciler.stats.corrections["drift"] - corrected == len(moved)

    samples: list[float] = []
    for _ in range(REPEAT):
        drift_with_moves()
    correct_s = statistics.median(samples)
    # The same host without uevents: a drift pass also looks for devices that changed.
    blind = build(tree, scratch / "blind", uevents=False).reconciler
    blind.load_policy()
    blind.apply()

    def blind_drift() -> None:
        with blind._pass_lock:
            blind._drift_pass()

    blind_drift()
    without_uevents = cpu_seconds(blind_drift)
    return {
        "cpus": ncpus, "irqs": nirqs, "devices": len(bdfs),
        "place_all_s": round(place_all_s, 4), "full_pass_s": round(full_s, 4),
        "drift_floor_s": round(floor_s, 5), "drift_pass_s": round(drift_s, 5),
        "drift_ratio": round(drift_s / floor_s, 2),
        "drift_1pct_moved_s": round(correct_s, 4), "moved": len(moved),
        "drift_pass_without_uevents_s": round(without_uevents, 5),
        "cpu_percent_at_interval": round(100 * drift_s / DEFAULT_INTERVAL, 3),
        "cpu_percent_without_uevents": round(100 * without_uevents / DEFAULT_INTERVAL, 3),
    }


def steady(ncpus: int, nirqs: int, scratch: Path, interval: float = DEFAULT_INTERVAL,
           intervals: int = STEADY_INTERVALS) -> dict[str, float | int]:
    """The process's CPU time while the reconciler runs on its own thread at the interval, nothing moved."""
    tree = scratch / f"steady-{ncpus}-{nirqs}"
    generate(tree, ncpus, nirqs)
    reconciler = build(tree, scratch / f"steady-{ncpus}-{nirqs}-state", interval).reconciler
    reconciler.load_policy()
    reconciler.start()
    try:
        while reconciler.stats.full_passes < 1:
            time.sleep(0.01)
        passes = reconciler.stats.passes
        cpu_started, wall_started = time.process_time(), time.monotonic()
        time.sleep(intervals * interval)
        cpu, wall = time.process_time() - cpu_started, time.monotonic() - wall_started
        passes = reconciler.stats.passes - passes
    finally:
        reconciler.stop()
    return {"cpus": ncpus, "irqs": nirqs, "interval_s": interval, "wall_s": round(wall, 2),
            "passes": passes, "cpu_s": round(cpu, 4), "cpu_percent": round(100 * cpu / wall, 3)}


def latency(ncpus: int, nirqs: int, scratch: Path, interval: float, trials: int) -> dict[str, float | int]:
    """Seconds from a vector moved by hand to its correction, the reconciler on its own thread."""
    tree = scratch / f"latency-{ncpus}-{nirqs}-{interval}"
    generate(tree, ncpus, nirqs)
    irqs = sorted(int(name) for name in os.listdir(tree / "proc/irq"))
    services = build(tree, scratch, interval)
    reconciler = services.reconciler
    reconciler.load_policy()
    reconciler.start()
    chooser = random.Random(interval)
    waits = []
    try:
        while reconciler.stats.full_passes < 1:
            time.sleep(0.01)
        for _ in range(trials):
            time.sleep(chooser.uniform(0, interval))  # a moment unrelated to the reconciler's passes
            irq = chooser.choice(irqs)
            path = tree / f"proc/irq/{irq}/smp_affinity_list"
            path.write_text("1\n")
            moved_at = time.monotonic()
            while path.read_text() != "0":
                if time.monotonic() - moved_at > 3 * interval + 30:
                    raise AssertionError(f"IRQ {irq} was not put back")
                time.sleep(0.005)
            waits.append(time.monotonic() - moved_at)
    finally:
        reconciler.stop()
    return {
        "cpus": ncpus, "irqs": nirqs, "interval_s": interval, "trials": trials,
        "median_s": round(statistics.median(waits), 3), "max_s": round(max(waits), 3),
        "mean_s": round(statistics.fmean(waits), 3),
    }


def run(cpus: list[int], irqs: list[int], trials: int = 10,
        intervals: int = STEADY_INTERVALS) -> dict[str, list[dict[str, float | int]]]:
    grid = []
    latencies = []
    steadies = []
    with tempfile.TemporaryDirectory(prefix="msixd-bench-policy-") as scratch:
        for ncpus in cpus:
            for nirqs in irqs:
                result = measure(ncpus, nirqs, Path(scratch))
                print(result, flush=True)
                grid.append(result)
        for ncpus in cpus:
            result = steady(ncpus, max(irqs), Path(scratch), intervals=intervals)
            print(result, flush=True)
            steadies.append(result)
        for interval in (DEFAULT_INTERVAL, 1.0):
            result = latency(min(cpus), max(irqs), Path(scratch), interval, trials)
            print(result, flush=True)
            latencies.append(result)
    return {"grid": grid, "steady": steadies, "latency": latencies}


if __name__ == "__main__":
    import json
    import sys

    quick = "--quick" in sys.argv
    print(json.dumps(run([64], [512, 4096], trials=3) if quick else run([64, 256, 1024], [512, 4096, 16384]),
                     indent=2))
