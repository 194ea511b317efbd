"""Per-caller bounds on long-lived calls (Watch streams).

A stream holds a gRPC worker for as long as it runs; without a bound, one
caller could take every worker of its class. Root is bounded too, more
generously, so that no stream of root's own tools can take its last worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from msixd.errors import MsixdError
from msixd.rpc.access import Peer


class TooManyStreams(MsixdError):
    def __init__(self, who: str, limit: int) -> None:
        super().__init__(f"{who} already has {limit} streams open, the most one caller may hold: close one first")
        self.limit = limit


class StreamLimiter:
    def __init__(self, per_caller: int, per_root: int | None = None) -> None:
        self._per_caller = per_caller
        self._per_root = per_root if per_root is not None else per_caller * 3
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, peer: Peer) -> Iterator[None]:
        limit = self._per_root if peer.is_root else self._per_caller
        with self._lock:
            held = self._open.get(peer.key, 0)
            if held >= limit:
                raise TooManyStreams(peer.describe(), limit)
            self._open[peer.key] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[peer.key] - 1
                if left:
                    self._open[peer.key] = left
                else:
                    del self._open[peer.key]

    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())
