from __future__ import annotations

import threading
import time

import pytest

from msixd.service.coalesce import Coalescer


def test_concurrent_callers_share_at_most_two_computations_and_none_is_stale() -> None:
    coalescer = Coalescer()
    computations: list[float] = []  # when each computation started
    lock = threading.Lock()

    def compute() -> float:
        started = time.monotonic()
        with lock:
            computations.append(started)
        time.sleep(0.05)
        return started

    arrivals: dict[int, float] = {}
    answers: dict[int, float] = {}

    def caller(n: int) -> None:
        arrivals[n] = time.monotonic()
        answers[n] = coalescer.run("key", compute)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
        time.sleep(0.002)  # arrivals spread over a computation and a half
    for thread in threads:
        thread.join()
    assert len(computations) <= 3, "16 callers, not 16 computations"
    for n in range(16):
        assert answers[n] >= arrivals[n], f"caller {n} got a computation that began before it arrived"


def test_errors_reach_every_waiter_and_do_not_stick() -> None:
    coalescer = Coalescer()
    with pytest.raises(KeyError):
        coalescer.run("k", lambda: {}["missing"])
    assert coalescer.run("k", lambda: 7) == 7


def test_keys_do_not_share() -> None:
    coalescer = Coalescer()
    assert (coalescer.run("a", lambda: 1), coalescer.run("b", lambda: 2)) == (1, 2)
