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
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight] = {}
        self._waiting: dict[Hashable, _Flight] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            flight = self._waiting.get(key)
            leader = flight is None
            if flight is None:
                flight = self._waiting[key] = _Flight()
                previous = self._running.get(key)
        if leader:
            if previous is not None:
                previous.done.wait()
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
                flight.done.set()
        else:
            flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[no-any-return]
