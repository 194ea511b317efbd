"""Samples of a device's interrupt counts, for msixctl watch and orchestration tools."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from msixd.errors import InvalidArgument
from msixd.kernel.irq import CpuCounts
from msixd.service.inventory import Inventory
from msixd.service.owner import Owner

MIN_INTERVAL = 0.1
MAX_INTERVAL = 60.0


@dataclass(frozen=True)
class VectorSample:
    vector: int
    irq: int
    total: int
    rate: float
    from_eventfd: bool
    per_cpu_count: CpuCounts


@dataclass(frozen=True)
class Sample:
    bdf: str
    time: float
    vectors: tuple[VectorSample, ...]


class Watcher:
    def __init__(self, inventory: Inventory, owner: Owner, clock: Callable[[], float] = time.time) -> None:
        self._inventory = inventory
        self._owner = owner
        self._clock = clock

    def sample(self, bdf: str, previous: Sample | None = None) -> Sample:
        device = self._inventory.get_device(bdf)
        counts = self._owner.counts(device.pci.bdf)
        now = self._clock()
        before = {v.vector: v.total for v in previous.vectors} if previous else {}
        elapsed = now - previous.time if previous else 0.0
        vectors = []
        for vector in device.vectors:
            from_eventfd = vector.index in counts
            total = counts[vector.index] if from_eventfd else vector.total_count
            rate = (total - before[vector.index]) / elapsed if elapsed > 0 and vector.index in before else 0.0
            vectors.append(
                VectorSample(vector.index, vector.irq, total, max(rate, 0.0), from_eventfd, vector.per_cpu_count)
            )
        return Sample(device.pci.bdf, now, tuple(vectors))

    def stream(self, bdf: str, interval: float, count: int, wait: Callable[[float], bool]) -> Iterator[Sample]:
        """`count` samples (0: until ended), `interval` apart; wait(seconds) returns False when the
        stream is to end early (the client went away, msixd is stopping)."""
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise InvalidArgument(f"interval must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds")
        previous = None
        sent = 0
        while count == 0 or sent < count:
            previous = self.sample(bdf, previous)
            yield previous
            sent += 1
            if (count == 0 or sent < count) and not wait(interval):
                return
