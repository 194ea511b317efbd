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
from concurrent import futures
from typing import Any, TypeVar

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per key, the computation running now and the one that starts when it ends;
        # each is a Future that every caller sharing it waits on.
        self._running: dict[Hashable, futures.Future[Any]] = {}
        self._waiting: dict[Hashable, futures.Future[Any]] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            joined: futures.Future[T] | None = self._waiting.get(key)
            if joined is None:
                flight: futures.Future[T] = futures.Future()
                self._waiting[key] = flight
                previous = self._running.get(key)
            else:
                flight = joined
        if joined is None:  # this caller leads the flight
            if previous is not None:
                futures.wait((previous,))
            with self._lock:
                del self._waiting[key]  # from here on, newcomers wait for the next one
                self._running[key] = flight
            try:
                flight.set_result(compute())
            except BaseException as err:  # noqa: BLE001 - every waiter gets the same outcome
                flight.set_exception(err)
            finally:
                with self._lock:
                    if self._running.get(key) is flight:
                        del self._running[key]
        return flight.result()
