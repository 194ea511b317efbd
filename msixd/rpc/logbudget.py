"""A bound on the log lines one source can make msixd write.

Refusals and failures a caller can provoke at will (a denied request, a
refused connection) are logged, but at most `lines` per `seconds` for one
key (a uid, a certificate name); what is suppressed is counted and said in
the first line of the next window. A hostile caller cannot fill the disk or
the journal through msixd.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LogBudget:
    def __init__(self, lines: int, seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 4096) -> None:
        self._lines = lines
        self._seconds = seconds
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (window start, lines, suppressed)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        return self.take(key) is not None

    def take(self, key: str) -> int | None:
        """None: do not log. Otherwise log, mentioning the returned count of lines suppressed before."""
        now = self._clock()
        with self._lock:
            start, lines, suppressed = self._windows.get(key, (now, 0, 0))
            if now - start >= self._seconds:
                start, lines = now, 0  # a new window; what was suppressed is reported now
            if lines >= self._lines:
                self._windows[key] = (start, lines, suppressed + 1)
                return None
            if len(self._windows) >= self._max_keys and key not in self._windows:
                self._windows.clear()  # bounded memory: forget every window rather than grow
            self._windows[key] = (start, lines + 1, 0)
            return suppressed
