"""A self-pipe that wakes a selector loop from another thread (the classic self-pipe trick;
selectors(3) has no wake-up call of its own)."""

from __future__ import annotations

import os
import selectors


class Waker:
    """Registered in the loop's selector with data ``"wake"``; wake() only writes a byte, so it
    may be called from any thread, holding any lock."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        selector.register(self._read, selectors.EVENT_READ, "wake")

    def wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except OSError:  # the pipe is full (a wake-up is pending anyway) or closed (the loop ended)
            pass

    def drain(self) -> None:
        try:
            os.read(self._read, 4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
