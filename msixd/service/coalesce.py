"""Concurrent identical reads share one computation, without ever answering stale.

A request joins the computation that has not started yet for its key, or
starts one; it never joins one already running, whose reads began before the
request arrived. So every answer reflects the kernel after its request came
in, and N concurrent identical requests cost at most two computations instead
of N (Python runs one thread at a time: N separate inventories would queue).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class _Flight:
    """One computation. `done` is made only when another caller waits for it: most requests
    come alone, and an Event (a Condition and its lock) costs more than the rest of run()."""

    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done: threading.Event | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def waiter(self) -> threading.Event:
        """The event to wait on; called with the Coalescer's lock held."""
        if self.done is None:
            self.done = threading.Event()
        return self.done


class Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight] = {}
        self._waiting: dict[Hashable, _Flight] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        previous: threading.Event | None = None
        with self._lock:
            flight = self._waiting.get(key)
            leader = flight is None
            if flight is None:
                flight = self._waiting[key] = _Flight()
                running = self._running.get(key)
                if running is not None:
                    previous = running.waiter()
            else:
                joined = flight.waiter()
        if not leader:
            joined.wait()
        else:
            if previous is not None:
                previous.wait()
            with self._lock:
                del self._waiting[key]  # from here on, newcomers wait for the next one
                self._running[key] = flight
            try:
                flight.result = compute()
            except BaseException as err:  # noqa: BLE001 - every waiter gets the same outcome
                flight.error = err
            finally:
                with self._lock:
                    if self._running.get(key) is flight:
                        del self._running[key]
                    done = flight.done  # no one can join any more: whoever waits has made it
                if done is not None:
                    done.set()
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[no-any-return]
