"""The Coalescer's promise, with every interleaving chosen by the test: computations run
until the test releases them, and a caller counts as arrived once it waits inside run()."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from msixd.service.coalesce import Coalescer

DEADLINE = 10.0
_RUN = Coalescer.run.__code__
_CONDITION_WAIT = threading.Condition.wait.__code__


def waiting_in_run(thread: threading.Thread) -> bool:
    """The thread blocks in Coalescer.run on another caller's computation: it has joined the
    next one, or leads it and waits for the running one to end. Either way which computation
    answers it is decided. (Blocked in a compute function of this module is not waiting.)"""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code is not _CONDITION_WAIT:
        return False
    while frame is not None and frame.f_code is not _RUN:
        if frame.f_code.co_filename == __file__:
            return False
        frame = frame.f_back
    return frame is not None


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE:g} s: {what}"
        time.sleep(0.001)


class Computations:
    """Compute functions numbered in the order they start; computation k runs until release(k)."""

    def __init__(self, count: int, failing: bool = False) -> None:
        self.events: list[tuple[str, int]] = []  # ("arrive", caller) and ("start", caller), in order
        self._lock = threading.Lock()
        self._started = [threading.Event() for _ in range(count)]
        self._release = [threading.Event() for _ in range(count)]
        self._failing = failing

    def arrive(self, caller: int) -> None:
        with self._lock:
            self.events.append(("arrive", caller))

    def compute(self, caller: int) -> Callable[[], int]:
        def run() -> int:
            with self._lock:
                k = sum(kind == "start" for kind, _ in self.events)
                self.events.append(("start", caller))
            self._started[k].set()
            assert self._release[k].wait(DEADLINE)
            if self._failing:
                raise KeyError(k)
            return k

        return run

    def running(self, k: int) -> bool:
        return self._started[k].wait(DEADLINE)

    def release(self, k: int) -> None:
        self._release[k].set()

    def started_by(self) -> list[int]:
        return [caller for kind, caller in self.events if kind == "start"]


def start_caller(coalescer: Coalescer, computations: Computations, caller: int,
                 answers: dict[int, int | BaseException]) -> threading.Thread:
    def call() -> None:
        computations.arrive(caller)
        try:
            answers[caller] = coalescer.run("key", computations.compute(caller))
        except KeyError as err:
            answers[caller] = err

    thread = threading.Thread(target=call, name=f"caller-{caller}")
    thread.start()
    return thread


def test_concurrent_callers_share_at_most_two_computations_and_none_is_stale() -> None:
    coalescer, computations = Coalescer(), Computations(3)
    answers: dict[int, int | BaseException] = {}
    first = start_caller(coalescer, computations, 0, answers)
    assert computations.running(0)

    # 16 callers arrive while computation 0 runs: they must not join it (it began
    # before they arrived), and must not compute 16 times either.
    crowd = [start_caller(coalescer, computations, n, answers) for n in range(1, 17)]
    wait_until(lambda: all(waiting_in_run(t) for t in crowd), "the 16 callers wait in run()")
    computations.release(0)
    assert computations.running(1)

    # One more arrives while computation 1 runs: it gets a computation of its own.
    late = start_caller(coalescer, computations, 17, answers)
    wait_until(lambda: waiting_in_run(late), "the late caller waits in run()")
    computations.release(1)
    assert computations.running(2)
    computations.release(2)
    for thread in (first, *crowd, late):
        thread.join(DEADLINE)

    assert answers[0] == 0
    assert {answers[n] for n in range(1, 17)} == {1}, "the 16 concurrent callers shared one computation"
    assert answers[17] == 2
    starters = computations.started_by()
    assert len(starters) == 3 and starters[0] == 0 and starters[1] in range(1, 17) and starters[2] == 17
    for caller, k in answers.items():
        assert isinstance(k, int)
        arrived = computations.events.index(("arrive", caller))
        began = computations.events.index(("start", starters[k]))
        assert began > arrived, f"caller {caller} got computation {k}, which began before it arrived"


def test_an_error_reaches_every_caller_sharing_the_computation_and_does_not_stick() -> None:
    coalescer, computations = Coalescer(), Computations(2, failing=True)
    answers: dict[int, int | BaseException] = {}
    first = start_caller(coalescer, computations, 0, answers)
    assert computations.running(0)
    crowd = [start_caller(coalescer, computations, n, answers) for n in range(1, 5)]
    wait_until(lambda: all(waiting_in_run(t) for t in crowd), "the 4 callers wait in run()")
    computations.release(0)
    assert computations.running(1)
    computations.release(1)
    for thread in (first, *crowd):
        thread.join(DEADLINE)

    assert isinstance(answers[0], KeyError) and answers[0].args == (0,)
    shared = {id(answers[n]) for n in range(1, 5)}
    assert len(shared) == 1 and isinstance(answers[1], KeyError) and answers[1].args == (1,)
    assert coalescer.run("key", lambda: 7) == 7, "a failed computation is not an answer for later callers"


def test_keys_do_not_share() -> None:
    coalescer = Coalescer()
    assert (coalescer.run("a", lambda: 1), coalescer.run("b", lambda: 2)) == (1, 2)


def test_the_probe_sees_a_waiting_caller_only() -> None:
    """waiting_in_run is what makes the tests above deterministic: check it tells the two apart."""
    gate = threading.Event()
    idle = threading.Thread(target=gate.wait)
    idle.start()
    coalescer, computations = Coalescer(), Computations(2)
    answers: dict[int, int | BaseException] = {}
    leader = start_caller(coalescer, computations, 0, answers)
    assert computations.running(0)
    follower = start_caller(coalescer, computations, 1, answers)
    wait_until(lambda: waiting_in_run(follower), "the follower waits in run()")
    assert not waiting_in_run(idle), "waiting, but not in run()"
    assert not waiting_in_run(leader), "in run(), but computing"
    gate.set()
    computations.release(0)
    assert computations.running(1)
    computations.release(1)
    for thread in (idle, leader, follower):
        thread.join(DEADLINE)
