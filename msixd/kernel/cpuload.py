"""Time each CPU spent in hard and soft interrupt handlers, through psutil.

psutil.cpu_times(percpu=True) reads <procfs>/stat, whose "cpuN" lines the
kernel prints for each online CPU in ascending order (fs/proc/stat.c,
show_stat(), for_each_online_cpu). psutil returns them as a list without the
CPU numbers, so the n-th entry is the n-th online CPU: the online set is read
before and after, and a measurement taken while a CPU came or went is
discarded. psutil keeps its procfs root in a module global (PROCFS_PATH): it
is set to the caller's root, under a lock, for the one call.
"""

from __future__ import annotations

import threading

import psutil

from msixd.kernel import system
from msixd.kernel.roots import KernelRoots

_PSUTIL_ROOT = threading.Lock()


def interrupt_seconds(roots: KernelRoots) -> dict[int, float] | None:
    """CPU number -> seconds spent in irq and softirq since boot; None when it cannot be told
    (no stat file, or the online CPUs changed while it was read)."""
    online = sorted(system.read_cpus(roots).online)
    with _PSUTIL_ROOT:
        saved = psutil.PROCFS_PATH
        psutil.PROCFS_PATH = str(roots.procfs)
        try:
            times = psutil.cpu_times(percpu=True)
        except (OSError, ValueError):  # no stat file, or one psutil cannot read
            return None
        finally:
            psutil.PROCFS_PATH = saved
    if len(times) != len(online) or sorted(system.read_cpus(roots).online) != online:
        return None
    return {cpu: entry.irq + entry.softirq for cpu, entry in zip(online, times, strict=True)}
